"""The train stage against a real MLflow store: both modes, the logged model is usable for LRP."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from isnetflow.config import TrainConfig
from isnetflow.lrp import relevance
from isnetflow.stages import train as stage


@pytest.mark.parametrize("mode", ["standard", "isnet"])
def test_train_stage_logs_usable_model(
    tmp_path: Path, tiny_validated: Path, tiny_cohort: Path, tiny_train_config: TrainConfig, mode: str
) -> None:
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

    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(summary["run_id"])
    assert run.data.params["mode"] == mode and run.data.tags["isnetflow.mode"] == mode
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
    from isnetflow.stages.train import load_train_data
    from isnetflow.training.loop import train

    base = tiny_train_config.model_copy(update={"mode": "isnet", "epochs": 2, "warmup_epochs": 1})
    data = load_train_data(tiny_validated, tiny_cohort / "masks", base, classes=["normal", "covid"])
    fitted = {}
    for region in ("image", "mask"):
        hm = base.heatmap.model_copy(update={"fg_region": region})
        result = train(base.model_copy(update={"heatmap": hm}), data, progress=False)
        assert result.c1 is not None and result.c2 is not None and 0 < result.c1 <= result.c2
        fitted[region] = (result.c1, result.c2)
    # same seed, same warm-up model: the lung mask holds only part of the image's relevance mass
    assert fitted["mask"][1] < fitted["image"][1]
    assert fitted["mask"] != fitted["image"]
