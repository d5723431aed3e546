"""The train stage against a real MLflow store: both modes, the logged model is usable for LRP."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from isnetflow.artifacts.training import learning_milestones
from isnetflow.config import TrainConfig
from isnetflow.lrp import relevance
from isnetflow.stages import train as stage
from isnetflow.training.splitfile import read_splits


@pytest.mark.parametrize("mode", ["standard", "isnet"])
def test_train_stage_logs_usable_model(
    tmp_path: Path,
    tiny_validated: Path,
    tiny_cohort: Path,
    tiny_train_config: TrainConfig,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING", logger="isnetflow.stages.train")
    cfg = tiny_train_config.model_copy(update={"mode": mode})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = stage.run(
        cfg,
        tiny_validated,
        tiny_cohort / "masks",
        tmp_path / "out",
        tracking_uri=uri,
        classes=["normal", "covid"],
    )
    assert summary["mode"] == mode and summary["splits"]["external"] > 0
    assert json.loads((tmp_path / "out" / "train_summary.json").read_text())["run_id"] == summary["run_id"]
    assert (tmp_path / "out" / "heatmaps.png").stat().st_size > 5000
    # the held-out patient list: written beside the model, named with its digest in the summary
    rows = read_splits(tmp_path / "out" / summary["splits_file"], expected_sha256=summary["splits_sha256"])
    assert sum(r.split == "test" for r in rows) > 0 and summary["splits_file"] == "splits.csv"

    # when it learned: from the training CE of history.csv, counted from the ISNet phase (the yardstick)
    ce = pd.read_csv(tmp_path / "out" / "history.csv")["train_ce"].tolist()
    learned = learning_milestones(ce, cfg.warmup_epochs if mode == "isnet" else None, cfg.epochs)
    assert {k: summary[k] for k in learned} == learned
    assert (summary["learned_early"] is None) == (mode == "standard")
    never = f"{mode}: the training cross-entropy never fell below 0.5"
    assert (never in caplog.text) == (learned["ce_below_half_epoch"] is None)

    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(summary["run_id"])
    assert run.data.params["mode"] == mode and run.data.tags["isnetflow.mode"] == mode
    assert ("ce_below_half_epoch" in run.data.metrics) == (learned["ce_below_half_epoch"] is not None)
    if mode == "isnet":
        assert run.data.tags["isnetflow.learned_early"] == str(learned["learned_early"]).lower()
    assert run.data.params["data.splits_sha256"] == summary["splits_sha256"]
    history = mlflow.MlflowClient().get_metric_history(summary["run_id"], "val_auc")
    assert len(history) == cfg.epochs
    if mode == "isnet":
        assert float(run.data.params["fitted.C1"]) > 0
        assert len(mlflow.MlflowClient().get_metric_history(summary["run_id"], "train_background")) == 1

    model = mlflow.pytorch.load_model(summary["model_uri"])
    assert isinstance(model, torch.nn.Module)
    for batch in (1, 5):
        x = torch.rand(batch, 1, cfg.image_size, cfg.image_size)
        assert model(x).shape == (batch, 2)
        r = relevance(model.eval(), x, torch.zeros(batch, dtype=torch.long))
        assert r.shape == x.shape and torch.isfinite(r).all()
    local = torch.load(summary["local_model"], weights_only=False)
    x = torch.rand(3, 1, cfg.image_size, cfg.image_size)
    np.testing.assert_allclose(local(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6, atol=1e-6)


def test_foreground_range_region(
    tiny_validated: Path, tiny_cohort: Path, tiny_train_config: TrainConfig
) -> None:
    """``fg_region='mask'`` derives C1/C2 from in-mask relevance only: a smaller range than the image's."""
    from isnetflow.training import load_train_data
    from isnetflow.training.loop import train

    base = tiny_train_config.model_copy(update={"mode": "isnet", "epochs": 2, "warmup_epochs": 1})
    data = load_train_data(tiny_validated, tiny_cohort / "masks", base, classes=["normal", "covid"])
    fitted = {}
    for region in ("image", "mask"):
        hm = base.heatmap.model_copy(update={"fg_region": region, "C1": None, "C2": None})  # from the warm-up
        result = train(base.model_copy(update={"heatmap": hm}), data, progress=False)
        assert result.c1 is not None and result.c2 is not None and 0 < result.c1 <= result.c2
        fitted[region] = (result.c1, result.c2)
    # same seed, same warm-up model: the lung mask holds only part of the image's relevance mass
    assert fitted["mask"][1] < fitted["image"][1]
    assert fitted["mask"] != fitted["image"]


@pytest.mark.parametrize("restart", [True, False])
def test_warmup_restart_starts_the_isnet_from_the_initial_weights(
    tmp_path: Path, tiny_validated: Path, tiny_cohort: Path, tiny_train_config: TrainConfig, restart: bool
) -> None:
    """With ``warmup_restart`` the warm-up network only sets C1/C2: the checkpoint written at the restart
    holds exactly the initial weights and a fresh optimizer, and the LR schedule starts again; without
    it the ISNet continues from the warmed-up weights."""
    from isnetflow.nets import build_model
    from isnetflow.training import load_train_data
    from isnetflow.training.checkpoint import CheckpointStore
    from isnetflow.training.loop import train

    ck = tmp_path / "ck"
    cfg = tiny_train_config.model_copy(
        update={
            "mode": "isnet",
            "epochs": 2,
            "warmup_epochs": 1,
            "warmup_restart": restart,
            "checkpoint_every": 10_000,  # only the end-of-epoch (and restart) checkpoints
            "checkpoint_dir": str(ck),
            "schedule": "cosine",
        }
    )
    data = load_train_data(tiny_validated, tiny_cohort / "masks", cfg, classes=["normal", "covid"])
    result = train(cfg, data, progress=False)
    steps_per_epoch = int((np.asarray(data.splits) == "train").sum()) // cfg.batch_size

    torch.manual_seed(cfg.seed)
    initial = build_model(cfg.model, num_classes=2, in_channels=1).state_dict()
    # step-N.pt (N = one epoch of steps) is the last checkpoint written before any ISNet step
    at_switch = torch.load(ck / f"step-{steps_per_epoch:08d}.pt", weights_only=False)
    same = [torch.equal(at_switch["model"][k], initial[k]) for k in initial if initial[k].is_floating_point()]
    assert all(same) if restart else not all(same)
    assert (at_switch["optimizer"]["state"] == {}) == restart
    assert at_switch["state"]["schedule_start"] == (steps_per_epoch if restart else 0)
    # cosine schedule: after the restart the ISNet epoch ends near zero LR again, not at the warm-up's
    total = steps_per_epoch if restart else 2 * steps_per_epoch  # steps of the schedule the last step is in
    expected = cfg.lr * 0.5 * (1 + np.cos(np.pi * (total - 1) / total))
    assert result.history[-1]["lr"] == pytest.approx(expected, rel=1e-9)
    assert CheckpointStore(str(ck)).load_latest() is not None


def test_two_trainings_sharing_a_checkpoint_dir_keep_to_their_own(
    tmp_path: Path, tiny_validated: Path, tiny_cohort: Path, tiny_train_config: TrainConfig
) -> None:
    """The pipeline's ISNet and standard tasks run at once with the same ``train.checkpoint_dir``.

    With the run's scope each writes, prunes and resumes only under ``<dir>/<run>/<mode>``. Without it
    (the defect: one folder for both), the second training's steps prune the first's checkpoints and its
    resume finds the other mode's checkpoint. The scopes are disjoint, so the order of writes cannot matter.
    """
    from isnetflow.training.checkpoint import CheckpointStore

    shared = tmp_path / "ckpt"
    base = tiny_train_config.model_copy(update={"checkpoint_dir": str(shared)})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = {}
    for mode in ("isnet", "standard"):
        summary = stage.run(
            base.model_copy(update={"mode": mode}),
            tiny_validated,
            tiny_cohort / "masks",
            tmp_path / f"out-{mode}",
            tracking_uri=uri,
            classes=["normal", "covid"],
            progress=False,
            resume=True,  # what a (retried) pipeline task does: nothing of its own yet, so a fresh start
            checkpoint_scope="run/42",  # a run id with a character that cannot be a folder name
        )
        runs[mode] = summary["run_id"]
    assert sorted(p.name for p in shared.iterdir()) == ["run-42"]
    assert sorted(p.name for p in (shared / "run-42").iterdir()) == ["isnet", "standard"]
    for mode in ("isnet", "standard"):
        ckpt = CheckpointStore(shared / "run-42" / mode).load_latest()
        assert ckpt is not None and json.loads(ckpt["fingerprint"])["mode"] == mode
        assert (
            len(list((shared / "run-42" / mode).glob("step-*.pt"))) == 2
        )  # kept = keep, not pruned by the other
        params = mlflow.MlflowClient(uri).get_run(runs[mode]).data.params
        assert params["checkpoint_dir"] == f"{shared}/run-42/{mode}"


def test_scoped_locations() -> None:
    from isnetflow.training.checkpoint import scoped_location

    assert scoped_location("s3://bucket/ckpt/", "8c1f-42", "isnet") == "s3://bucket/ckpt/8c1f-42/isnet"
    assert scoped_location("/data/ckpt", "a b/../c", "standard") == "/data/ckpt/a-b-..-c/standard"
    with pytest.raises(ValueError, match="empty after sanitizing"):
        scoped_location("/data/ckpt", "///", "isnet")


def test_training_leaves_torch_settings_as_it_found_them(
    tiny_validated: Path, tiny_cohort: Path, tiny_train_config: TrainConfig
) -> None:
    """Threads and deterministic algorithms are process-global: set for the training, restored after it
    (also when it fails), so an evaluation or the next test in the same process is not changed by it."""
    from isnetflow.training import load_train_data
    from isnetflow.training.loop import train

    cfg = tiny_train_config.model_copy(update={"mode": "standard", "epochs": 1, "num_threads": 1})
    data = load_train_data(tiny_validated, tiny_cohort / "masks", cfg, classes=["normal", "covid"])
    seen = []

    def spy(epoch: int, metrics: dict[str, float], model: torch.nn.Module) -> None:
        seen.append((torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()))

    torch.set_num_threads(3)
    torch.use_deterministic_algorithms(False)
    train(cfg, data, on_epoch=spy, progress=False)
    assert seen == [(1, True)]  # during the training: its settings
    assert torch.get_num_threads() == 3 and not torch.are_deterministic_algorithms_enabled()

    def boom(epoch: int, metrics: dict[str, float], model: torch.nn.Module) -> None:
        raise RuntimeError("tracking failed")

    with pytest.raises(RuntimeError, match="tracking failed"):
        train(cfg, data, on_epoch=boom, progress=False)
    assert torch.get_num_threads() == 3 and not torch.are_deterministic_algorithms_enabled()
