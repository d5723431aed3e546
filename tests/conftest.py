"""Shared fixtures: the real data folder (skipped when absent) and small synthetic cohorts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from isnetflow.config import SynthConfig, TrainConfig, ValidateConfig
from tests._configs import Trained, tiny_train_cfg

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ISNETFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _process_state_restored() -> Iterator[None]:
    """What a test changes in process-global state is put back: MLflow's tracking URI and active runs,
    torch's thread count and deterministic-algorithms mode. A file then gives the same results alone and
    in the full suite, in any order."""
    import mlflow
    import torch

    uri = mlflow.get_tracking_uri()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(uri)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one CPU thread for the test (exactness checks: `pytest.mark.usefixtures("one_thread")`)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def _isolated_mlflow(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Never let a test write MLflow's default ``./mlflow.db`` into the checkout: use a session store."""
    if "MLFLOW_TRACKING_URI" not in os.environ:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real radiographs, masks, DICOM); tests using it skip when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real shared data not found at {SHARED_DATA} (set ISNETFLOW_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_dicom_dir(shared_data: Path) -> Path:
    d = shared_data / "real-dicom"
    if not d.is_dir():
        pytest.skip(f"{d} is absent")
    return d


@pytest.fixture(scope="session")
def small_synth_config() -> SynthConfig:
    """A shrunk cohort config: 60 images at 128 px, all default sites, in-process."""
    return SynthConfig(n=60, size=128, seed=7, workers=1)


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory: pytest.TempPathFactory, small_synth_config: SynthConfig) -> Path:
    """A small cohort written once per test session (read-only for tests: copy before mutating)."""
    from isnetflow.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(small_synth_config, out, progress=False)
    return out


# ---- a tiny validated cohort (synth -> validate) and a shrunk training config, for training tests


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
    """A shrunk ISNet config (:func:`tests._configs.tiny_train_cfg`) with the audit and frequent
    checkpoints."""
    return tiny_train_cfg("isnet", test_fraction=0.1, audit_samples=8, checkpoint_every=2)


@pytest.fixture(scope="session")
def eval_trained(
    tiny_cohort: Path, tiny_validated: Path, tmp_path_factory: pytest.TempPathFactory
) -> Trained:
    """The tiny cohort's standard model (``tiny_train_cfg``), trained once, logged to a local SQLite store."""
    from isnetflow.stages import train

    root = tmp_path_factory.mktemp("eval-stage")
    cfg = tiny_train_cfg()
    uri = f"sqlite:///{root}/mlflow.db"
    summary = train.run(
        cfg, tiny_validated, tiny_cohort / "masks", root / "train", tracking_uri=uri,
        classes=["normal", "covid"], progress=False,
    )  # fmt: skip
    return Trained(tiny_validated, tiny_cohort / "masks", cfg, summary, uri, root)
