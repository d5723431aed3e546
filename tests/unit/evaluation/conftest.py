"""A tiny validated cohort and one tiny trained model (local SQLite MLflow store) for the stage tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from isnetflow.config import SynthConfig, TrainConfig, ValidateConfig


@dataclass(frozen=True)
class Trained:
    validated: Path
    masks: Path
    train_cfg: TrainConfig
    summary: dict[str, Any]
    tracking_uri: str
    root: Path


def tiny_train_cfg(mode: str = "standard") -> TrainConfig:
    return TrainConfig(
        mode=mode,  # type: ignore[arg-type]
        model="cnn-small",
        image_size=48,
        batch_size=8,
        epochs=2,
        warmup_epochs=1,
        val_fraction=0.3,
        test_fraction=0.2,
        audit_samples=0,
        num_threads=1,
        device="cpu",
        checkpoint_every=100,
    )


@pytest.fixture(scope="session")
def eval_trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from isnetflow.stages import train, validate
    from isnetflow.synth import generate_cohort

    root = tmp_path_factory.mktemp("eval-stage")
    cohort = root / "cohort"
    generate_cohort(SynthConfig(n=48, size=96, seed=5, workers=1), cohort, progress=False)
    info = json.loads((cohort / "cohort.json").read_text())
    vcfg = ValidateConfig(
        image_size=96,
        min_images_per_site=1,
        external_sites=info["external_sites"],
        internal_sites=info["internal_sites"],
        workers=1,
    )
    validate.run(vcfg, cohort / "dicom", root / "validated", labels=cohort / "labels.csv")
    cfg = tiny_train_cfg()
    uri = f"sqlite:///{root}/mlflow.db"
    summary = train.run(
        cfg,
        root / "validated",
        cohort / "masks",
        root / "train",
        tracking_uri=uri,
        classes=["normal", "covid"],
        progress=False,
    )
    return Trained(root / "validated", cohort / "masks", cfg, summary, uri, root)
