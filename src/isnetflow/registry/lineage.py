"""Dataset lineage in MLflow's own terms: the validated manifest as an MLflow dataset input of a run.

The train and evaluate stages call :func:`log_manifest_input` inside their run. It records, with
:func:`mlflow.log_input`, the validate stage's ``manifest.csv`` as an MLflow dataset:

* ``name``: ``manifest``; ``source``: the manifest's location (a local path or an ``s3://`` URI);
* ``digest``: the first 32 hex digits of the manifest file's sha256 (MLflow allows 36 characters);
  the full sha256 is in the profile and, as before, in the run tag ``data.manifest_sha256``;
* ``schema``: the manifest's columns (MLflow's schema inferred from the typed manifest reader);
* ``profile``: row counts (all, valid), ``manifest_sha256``, the validated data's fingerprint and
  ``normalization``: the validate stage's settings as recorded in its ``validation.json`` (window,
  percentiles, image size and format, and the checks). That is how a model knows how its training
  images were normalized: :func:`normalization_of_run` reads it back from a training run, and the pyfunc
  package (:mod:`isnetflow.registry.classifier`) stores it with the model;
* input tag ``mlflow.data.context``: ``training`` or ``evaluation``.

The existing lineage tags (``data.manifest_sha256``, ``lineage.*`` on registered versions) stay.

:func:`code_version` names the code a model came from (``lineage.code_version`` of a registered version,
and part of the retraining recipe, :func:`isnetflow.stages.retrain.recipe_digest`).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import warnings
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset

from isnetflow import __version__
from isnetflow.artifacts import ArtifactError
from isnetflow.artifacts.validation import ValidationSummary
from isnetflow.validation.manifest import MANIFEST_FILE, manifest_sha256, read_manifest

log = logging.getLogger(__name__)

__all__ = [
    "DATASET_NAME",
    "DIGEST_CHARS",
    "ManifestDataset",
    "code_version",
    "log_manifest_input",
    "manifest_dataset",
    "normalization_of_run",
]

DATASET_NAME = "manifest"
DIGEST_CHARS = 32
Context = Literal["training", "evaluation"]


class ManifestDataset(PandasDataset):
    """A :class:`~mlflow.data.pandas_dataset.PandasDataset` whose profile carries the lineage facts."""

    def __init__(self, df: pd.DataFrame, source: str, digest: str, extra_profile: dict[str, Any]) -> None:
        """The manifest ``df`` read from ``source``, with ``digest``; ``extra_profile`` joins the profile."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        self._extra_profile = dict(extra_profile)
        super().__init__(df=df, source=resolve_dataset_source(source), name=DATASET_NAME, digest=digest)

    @property
    def profile(self) -> Any | None:
        """MLflow's pandas profile with the lineage facts added."""
        return {**(super().profile or {}), **self._extra_profile}


def _validation_config(validated: Path) -> dict[str, Any] | None:
    """The validate stage's settings from ``validation.json`` (None when absent or unreadable)."""
    try:
        return ValidationSummary.read_from(validated).config
    except ArtifactError as exc:
        log.warning("no validate settings recorded (%s)", exc)
        return None


def manifest_dataset(validated: str | Path) -> ManifestDataset:
    """The validated folder's ``manifest.csv`` as an MLflow dataset (see the module docstring)."""
    from isnetflow.validation.fingerprint import data_fingerprint

    validated = Path(validated)
    df = read_manifest(validated)
    sha = manifest_sha256(validated) or ""
    profile = {
        "valid_rows": int((df["status"] == "valid").sum()),
        "manifest_sha256": sha,
        "data_fingerprint": data_fingerprint(validated),
        "normalization": _validation_config(validated),
    }
    source = str((validated / MANIFEST_FILE).resolve())
    return ManifestDataset(df, source, sha[:DIGEST_CHARS], profile)


def log_manifest_input(validated: str | Path, context: Context) -> ManifestDataset:
    """``mlflow.log_input`` of :func:`manifest_dataset` in the active run, with ``context``."""
    import mlflow

    dataset = manifest_dataset(validated)
    with warnings.catch_warnings():  # MLflow's hint on integer columns is about model signatures
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column", category=UserWarning)
        mlflow.log_input(dataset, context=context)
    return dataset


def normalization_of_run(run_id: str) -> dict[str, Any] | None:
    """The validate settings recorded with a run's ``training`` manifest input (None when absent)."""
    import mlflow

    run = mlflow.MlflowClient().get_run(run_id)
    for item in run.inputs.dataset_inputs if run.inputs else []:
        context = {t.key: t.value for t in item.tags}.get("mlflow.data.context")
        if item.dataset.name != DATASET_NAME or context != "training":
            continue
        try:
            profile = json.loads(item.dataset.profile or "{}")
        except ValueError:
            return None
        normalization = profile.get("normalization")
        return normalization if isinstance(normalization, dict) else None
    return None


def code_version() -> str:
    """The git commit of the package source when it is a checkout, else ``isnetflow==<version>``."""
    src = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        if re.fullmatch(r"[0-9a-f]{40}", sha):
            return sha
    except (OSError, subprocess.SubprocessError):
        pass
    return f"isnetflow=={__version__}"
