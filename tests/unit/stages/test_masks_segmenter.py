"""The segmenter stage with a local sqlite MLflow store: idempotent registration of the shipped
weights, loading a registered version back, and a tiny end-to-end training run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from isnetflow.config import SegmenterTrainConfig
from isnetflow.masks import SHIPPED_SPEC, SegmenterSpec
from isnetflow.registry.segmenter import load_segmenter
from isnetflow.stages.segmenter import REGISTERED_MODEL, register_shipped, train

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def test_register_shipped_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    v1 = register_shipped(uri)
    v2 = register_shipped(uri)
    assert v1 == v2 == "1"
    client = MlflowClient(uri)
    versions = client.search_model_versions(f"name = '{REGISTERED_MODEL}'")
    assert len(versions) == 1
    sha = SegmenterSpec.load(SHIPPED_SPEC).weights_sha256
    assert versions[0].tags["weights_sha256"] == sha
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts next to the database, not in the cwd
    seg = load_segmenter(f"models:/{REGISTERED_MODEL}/{v1}", tracking_uri=uri)
    assert seg.spec.weights_sha256 == sha
    image = np.zeros((64, 80), dtype=np.float32)
    assert seg.segment(image).shape == (64, 80)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # global MLflow state restored
    mlflow.set_tracking_uri(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}/{v1}")
        masks = pyfunc.predict(np.zeros((2, 64, 80), dtype=np.float32))
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert masks.shape == (2, 64, 80) and masks.dtype == np.uint8


def test_train_segmenter_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store is under --out
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,patient_id"]
    for i in range(6):
        mask = np.zeros((48, 48), dtype=np.uint8)
        mask[8:40, 6:20] = 255
        mask[8:40, 28:42] = 255
        mask[30:34, 10:14] = 127
        img = np.where(mask == 255, 60, 180) + rng.integers(0, 20, mask.shape)
        Image.fromarray(img.astype(np.uint8)).save(data / "images" / f"im{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"im{i}.png")
        rows.append(f"images/im{i}.png,p{i // 2}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    cfg = SegmenterTrainConfig(
        channels=(4, 8, 16),
        image_size=48,
        epochs=2,
        batch_size=4,
        val_fraction=0.3,
        synthetic_n=4,
        eval_synthetic_n=2,
        workers=0,
        threads=1,
        registered_model="tiny-lungs",
    )
    out = tmp_path / "out"
    summary = train(cfg, data / "images", data / "masks", out, manifest=data / "manifest.csv", progress=False)
    for name in (
        "lung_segmenter.pt",
        "lung_segmenter.json",
        "MODEL_CARD.md",
        "evaluation.json",
        "history.csv",
        "split.csv",
        "validation_overlays.png",
    ):
        assert (out / name).is_file(), name
    assert summary["tracking_uri"] == f"sqlite:///{out.resolve()}/mlflow.db"
    assert summary["registered_version"] == "1"
    spec = SegmenterSpec.load(out / "lung_segmenter.json")
    assert len(spec.training["validation_images"]) == 2
    assert "heldout_dice_mean" in summary["metrics"]
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    assert run.data.params["epochs"] == "2" and "val_dice" in run.data.metrics
    assert len(client.get_metric_history(summary["run_id"], "loss")) == 2
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert {"MODEL_CARD.md", "validation_overlays.png"} <= artifacts
    card = (out / "MODEL_CARD.md").read_text()
    assert (
        "Held-out real radiographs" in card and json.loads((out / "evaluation.json").read_text())["held_out"]
    )


def test_fine_tuning_starts_from_the_given_weights(tmp_path: Path) -> None:
    from isnetflow.masks import build_network, load_network, save_network
    from isnetflow.masks.data import Sample
    from isnetflow.masks.train import make_spec, train_segmenter

    cfg = SegmenterTrainConfig(
        channels=(4, 8, 16), image_size=32, epochs=1, batch_size=2, workers=0, threads=1
    )
    torch.manual_seed(7)
    start = build_network(make_spec(cfg))
    spec_path = save_network(start, make_spec(cfg), tmp_path / "start")
    start, _ = load_network(spec_path)  # float16 on disk: compare with what was saved
    label = np.zeros((32, 32), dtype=np.uint8)
    label[4:28, 4:14] = 1
    sample = Sample("a", "p", "real", np.full((32, 32), 0.5, dtype=np.float32), label, np.zeros_like(label))
    no_step = cfg.model_copy(
        update={"learning_rate": 1e-12, "weight_decay": 0.0, "init_from": str(spec_path)}
    )
    tuned = train_segmenter([sample], [], no_step, progress=False).model
    for (name, a), b in zip(start.state_dict().items(), tuned.state_dict().values(), strict=True):
        if a.is_floating_point() and "running" not in name:
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    fresh = train_segmenter(
        [sample], [], no_step.model_copy(update={"init_from": None}), progress=False
    ).model
    assert not torch.allclose(next(iter(fresh.parameters())), next(iter(start.parameters())))
    wider = no_step.model_copy(update={"channels": (8, 16, 32)})
    with pytest.raises(ValueError, match=r"init_from .* set the same architecture"):
        train_segmenter([sample], [], wider, progress=False)
