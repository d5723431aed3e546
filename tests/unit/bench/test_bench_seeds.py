"""``isnetflow bench seeds`` on a tiny synthetic cohort with a shrunk config: JSON shape, MLflow runs."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from isnetflow.bench.seeds import parse_seeds
from isnetflow.cli import app
from isnetflow.names import BENCH_SEEDS_EXPERIMENT

METRICS = {"internal_auc", "external_auc", "min_site_auc", "background_share", "flip_rate", "gates_passed"}

TINY = {
    "synth": {"n": 48, "size": 96, "seed": 5, "workers": 1},
    "validate": {"image_size": 96, "min_images_per_site": 1, "workers": 1},
    "train": {
        "model": "cnn-small", "image_size": 48, "batch_size": 8, "epochs": 2, "warmup_epochs": 1,
        "val_fraction": 0.3, "test_fraction": 0.15, "audit_samples": 8, "num_threads": 1, "device": "cpu",
    },
    "evaluate": {"n_boot": 20, "audit_per_site": 2, "counterfactual_max": 16, "num_threads": 1},
}  # fmt: skip


def test_parse_seeds() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("1-2,5, 2") == [1, 2, 5]
    for bad in ("", "a-b", "3-1", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per module: the tests share the prepared cohort (``w/cohort``)."""
    return tmp_path_factory.mktemp("bench-seeds")


def test_bench_seeds_json_shape_and_mlflow(tmp_path: Path, shared: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["bench", "seeds", "--seeds", "0-1", "--config", str(cfg), "--workdir", str(shared / "w")]
    result = CliRunner().invoke(app, [*args, "--tracking-uri", uri, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert [s["seed"] for s in out["seeds"]] == [0, 1]
    assert isinstance(out["wall_seconds"], float) and out["wall_seconds"] > 0
    for row in out["seeds"]:
        for model in ("isnet", "standard"):
            assert set(row[model]) >= METRICS, model
            assert isinstance(row[model]["gates_passed"], bool)
            assert 0.0 <= row[model]["internal_auc"] <= 1.0 and 0.0 <= row[model]["flip_rate"] <= 1.0
        assert {"internal_auc", "external_auc"} <= set(row["masked"])
        assert len(row["masked"]["history"]["train_ce"]) == 2  # the lungs-only curves: the yardstick
        assert "background_share" not in row["masked"]  # no audit of a model that needs masks
        history = row["isnet"]["history"]
        assert len(history["val_auc"]) == 2 and history["heatmap_loss_on"] == [False, True]
        # when each run learned: the ISNet is judged on its phase (epoch 1 of 2), the others have none
        first = row["isnet"]["ce_below_half_epoch"]
        assert first is None or first == next(e for e, v in enumerate(history["train_ce"]) if e and v < 0.5)
        assert row["isnet"]["learned_early"] is (first is not None and first < 2)
        assert row["standard"]["learned_early"] is None and row["masked"]["learned_early"] is None
        assert "ce_below_half_epoch" in row["masked"]
        assert history["train_grad_cosine"][0] is None and -1 <= history["train_grad_cosine"][1] <= 1
    assert out["summary"]["isnet"]["gates_passed"]["of"] == 2
    assert out["summary"]["masked"]["external_auc"]["min"] <= out["summary"]["masked"]["external_auc"]["max"]
    from rich.console import Console

    from isnetflow.bench.seeds import seed_table

    console = Console(record=True, width=160)
    console.print(seed_table(out))
    text = console.export_text()
    assert "mean" in text and "masked" in text and "2 passed" not in text.replace("/2 passed", "")
    assert "CE < 0.5" in text and f"{out['summary']['isnet']['learned_early']['count']}/2 early" in text
    # the cohort was prepared once and is reused by a second study with the same settings
    assert json.loads((shared / "w" / "cohort" / "cohort.json").read_text())["key"]

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(BENCH_SEEDS_EXPERIMENT).experiment_id])
    parent = [r for r in runs if r.info.run_id == out["mlflow_run_id"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == out["mlflow_run_id"]]
    assert parent and len(children) == 6
    assert {r.data.tags["bench.model"] for r in children} == {"isnet", "standard", "masked"}
    art = [a.path for a in client.list_artifacts(children[0].info.run_id, "figures")]
    assert any(p.endswith("-curves.png") for p in art)


def test_the_summary_counts_early_and_never() -> None:
    from isnetflow.bench.seeds import summarize

    rows = [
        {"seed": s, "isnet": {"external_auc": 0.9, "ce_below_half_epoch": e, "learned_early": early}}
        for s, (e, early) in enumerate(((12, True), (20, False), (None, False)))
    ]
    out = summarize(rows, ["isnet"])["isnet"]
    assert out["learned_early"] == {"count": 1, "of": 3}
    assert out["ce_below_half_epoch"] == {"mean": 16.0, "min": 12.0, "max": 20.0, "never": 1}
    rows[2]["isnet"]["ce_below_half_epoch"] = 8
    assert "never" not in summarize(rows, ["isnet"])["isnet"]["ce_below_half_epoch"]


def test_bench_seeds_table_and_bad_seeds(tmp_path: Path) -> None:
    bad = CliRunner().invoke(app, ["bench", "seeds", "--seeds", "4-1"])
    assert bad.exit_code != 0 and "--seeds" in bad.output


def test_bench_seeds_jobs_match_serial(tmp_path: Path, shared: Path) -> None:
    """``jobs=2`` trains the seeds in worker processes and gives the rows ``jobs=1`` gives."""
    from isnetflow.bench.seeds import seed_study
    from isnetflow.config import Settings

    settings = Settings.model_validate(TINY)
    kw = {"models": ["standard"], "cohort_dir": shared / "w" / "cohort", "progress": False}
    serial = seed_study(settings, [0, 1], tmp_path / "a", tracking_uri=f"sqlite:///{tmp_path}/a.db", **kw)
    seen: list[int] = []
    parallel = seed_study(
        settings, [0, 1], tmp_path / "b", tracking_uri=f"sqlite:///{tmp_path}/b.db", jobs=2,
        on_seed=lambda row: seen.append(row["seed"]), **kw,
    )  # fmt: skip
    assert sorted(seen) == [0, 1] and [r["seed"] for r in parallel["seeds"]] == [0, 1]
    for a, b in zip(serial["seeds"], parallel["seeds"], strict=True):
        drop = {"train_seconds"}
        assert {k: v for k, v in a["standard"].items() if k not in drop} == {
            k: v for k, v in b["standard"].items() if k not in drop
        }
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/b.db")
    runs = client.search_runs([client.get_experiment_by_name(BENCH_SEEDS_EXPERIMENT).experiment_id])
    assert len([r for r in runs if r.data.tags.get("mlflow.parentRunId") == parallel["mlflow_run_id"]]) == 2


def test_the_arms_derive_from_the_recipe() -> None:
    """``swap``: the ISNet recipe without its relevance loss; ``authors`` undoes each deviation."""
    from isnetflow.bench.seeds import ARMS, MODELS
    from isnetflow.config import TrainConfig

    recipe = TrainConfig(epochs=7, heatmap={"P": 0.6})
    swap = ARMS["swap"].train_config(recipe)
    assert swap.mode == "isnet" and not swap.relevance_loss
    assert swap.model_dump(exclude={"relevance_loss"}) == recipe.model_dump(exclude={"relevance_loss"})
    authors = ARMS["authors"].train_config(recipe)
    assert (authors.warmup_inputs, authors.warmup_restart, authors.isnet_swap_fraction) == ("raw", True, 0.0)
    hm = authors.heatmap
    assert (hm.grad_balance, hm.C1, hm.C2, hm.d) == (None, None, None, 0.9)
    assert authors.distill.epochs_for(authors.epochs) == 0  # the paper's ISNet has no teacher
    assert swap.distill == recipe.distill  # swapping arm: the recipe's teacher, no relevance loss
    assert hm.P == 0.6 and authors.epochs == 7  # everything else is the recipe's
    assert ARMS["masked"].masked_inputs and ARMS["standard"].train_config(recipe).mode == "standard"
    assert set(MODELS) <= set(ARMS)


def test_swap_and_authors_arms_run_and_the_isnet_is_judged_against_the_standard_model(
    tmp_path: Path, shared: Path
) -> None:
    from isnetflow.bench.seeds import seed_study
    from isnetflow.config import Settings

    settings = Settings.model_validate(TINY)
    out = seed_study(
        settings, [0], tmp_path / "w", tracking_uri=f"sqlite:///{tmp_path}/m.db", progress=False,
        models=["authors", "swap", "standard"], cohort_dir=shared / "w" / "cohort",
    )  # fmt: skip
    row = out["seeds"][0]
    assert list(out["summary"]) == ["standard", "swap", "authors"]  # table order, whatever was asked
    for arm in ("swap", "authors"):
        assert set(row[arm]) >= METRICS, arm
    assert row["swap"]["history"]["heatmap_loss_on"] == [False, False]  # no relevance loss, ever
    assert row["authors"]["history"]["heatmap_loss_on"] == [False, True]
    # the do-no-harm gate: every arm but the standard model is compared with the same seed's standard model
    drop = settings.promote.max_auc_drop_vs_standard
    assert drop is not None
    worse = row["swap"]["external_auc"] < row["standard"]["external_auc"] - drop
    assert ("standard_auc_delta" in row["swap"]["gates_failed"]) == worse
    assert "standard_auc_delta" not in row["standard"]["gates_failed"]


def test_cohort_key_follows_the_segmenter_weights(tmp_path: Path) -> None:
    import shutil

    from isnetflow.bench.seeds import cohort_key
    from isnetflow.config import Settings
    from isnetflow.masks import SHIPPED_SPEC, SegmenterSpec

    shipped = Settings()
    assert cohort_key(shipped) == cohort_key(Settings())  # reused when nothing changed
    folder = tmp_path / "segmenter"
    shutil.copytree(SHIPPED_SPEC.parent, folder)
    local = Settings.model_validate({"masks": {"model": str(folder / "lung_segmenter.json")}})
    before = cohort_key(local)
    spec = SegmenterSpec.load(folder / "lung_segmenter.json")
    spec.weights_sha256 = "0" * 64  # retrained in place: the spec names the new weights by their sha256
    spec.save(folder / "lung_segmenter.json")
    assert cohort_key(local) != before  # same settings, new weights: never the old masks
    assert cohort_key(shipped, input_uri="s3://b/x") != cohort_key(shipped)
