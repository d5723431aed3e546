"""MLflow tracking set-up shared by the stages."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["default_tracking_uri", "flatten", "use_tracking"]

DEFAULT_HOME = Path(".isnetflow")


def default_tracking_uri(home: str | Path = DEFAULT_HOME) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a local SQLite store under ``home`` (the demo default)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def use_tracking(
    tracking_uri: str | None, experiment: str, *, artifact_root: str | Path | None = None
) -> str:
    """Point mlflow at ``tracking_uri`` (default: :func:`default_tracking_uri`) and an experiment.

    For a local SQLite store the experiment's artifacts go to ``artifact_root`` (default: an
    ``mlartifacts`` folder beside the database), so no artifact ever lands in the working directory.
    Returns the experiment id.
    """
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is not None:
        mlflow.set_experiment(experiment)
        return str(exp.experiment_id)
    location = None
    if artifact_root is not None:
        location = Path(artifact_root).resolve().as_uri()
    elif uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    return str(exp_id)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b": "value"}`` strings for ``mlflow.log_params`` (500-char limit)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v)[:500]
    return out
