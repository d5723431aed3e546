"""A tiny validated cohort (synth -> validate) shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from isnetflow.config import SynthConfig, TrainConfig, ValidateConfig


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from isnetflow.synth import generate_cohort

    out = tmp_path_factory.mktemp("tiny")
    generate_cohort(SynthConfig(n=48, size=96, seed=5, workers=1), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_validated(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import json

    from isnetflow.stages import validate

    info = json.loads((tiny_cohort / "cohort.json").read_text())
    cfg = ValidateConfig(
        image_size=96,
        min_images_per_site=1,
        external_sites=info["external_sites"],
        internal_sites=info["internal_sites"],
        workers=1,
    )
    out = tmp_path_factory.mktemp("tiny-validated")
    validate.run(cfg, tiny_cohort / "dicom", out, labels=tiny_cohort / "labels.csv")
    return out


@pytest.fixture
def tiny_train_config() -> TrainConfig:
    """A shrunk config: the small plain CNN at 48 px, two epochs (one warm-up), one thread."""
    return TrainConfig(
        model="cnn-small",
        image_size=48,
        batch_size=8,
        epochs=2,
        warmup_epochs=1,
        val_fraction=0.3,
        test_fraction=0.1,
        audit_samples=8,
        num_threads=1,
        device="cpu",
        checkpoint_every=2,
    )
