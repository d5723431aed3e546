"""What the command modules share: the console, the options several commands declare, and the one way
options override the settings (``--config`` YAML, else the defaults in :mod:`isnetflow.config`).

Imports stay light here and in every command module (typer, rich, the config): ``isnetflow --help``
must not load torch, MLflow or kfp; each command imports what it runs inside its function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console

from isnetflow.config import Settings

console = Console(stderr=True)

M = TypeVar("M", bound=BaseModel)


def load_settings(config: Path | None) -> Settings:
    """The settings of ``--config`` (None: the defaults); a file that cannot be used is a usage error."""
    try:
        return Settings.load(config)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def with_overrides(base: M, /, **overrides: Any) -> M:
    """``base`` with the options that were given (None: not given), validated as a whole like the YAML;
    a value the settings refuse is a usage error (exit status 2, the settings' own message)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return type(base).model_validate({**base.model_dump(), **given})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def split_sites(values: list[str] | None, known: list[str] | None = None) -> list[str]:
    """``--external-sites`` values: each a site name, or a comma-separated list of names (a value equal
    to a ``known`` site is kept whole, so a name with a comma works given on its own)."""
    from isnetflow.validation.sites import split_site_list

    return split_site_list(values or [], known or [])


# ---- options that several commands declare (help text and default exactly as each command had them)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML with any subset of the settings (see isnetflow.config)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only.")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Processes; 0 = all cores.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", help="Torch CPU threads (0 = default).")]
#: the MLflow experiment of train and evaluate (the remote commands' --experiment is the KFP experiment:
#: remote.ExperimentOpt)
MlflowExperimentOpt = Annotated[str, typer.Option("--experiment")]

# The input of a pipeline run: `isnetflow run`, submit, schedule, bench seeds.
InputOpt = Annotated[
    str | None, typer.Option("--input", help="DICOM folder or s3://bucket/prefix (default: synthetic).")
]
LabelsOpt = Annotated[
    str | None, typer.Option("--labels", help="labels.csv (default: labels.csv in --input).")
]
#: submit, schedule, bench seeds (`isnetflow run` words its help differently: RunExternalOpt)
ExternalOpt = Annotated[
    list[str] | None,
    typer.Option("--external-sites", help="Site(s) held out as external: repeatable, or comma-separated."),
]
RunExternalOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--external-sites",
        help="Site(s) held out as external: repeat the option or give a comma-separated list.",
    ),
]

# --tracking-uri: one flag, but what "not given" means differs by command (the local store, a store in
# the command's own folder, the pods' MLFLOW_TRACKING_URI), and each help text says so in its own words;
# the texts are kept word for word, hence one alias per wording.
TrackingUriOpt = Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")]
#: run, bench seeds: the default store is in --workdir
WorkdirTrackingUriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: sqlite in --workdir).")
]
#: train: the default store
TrainTrackingUriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: local sqlite store).")
]
#: explain: the default store, used only when --model is an MLflow URI
ExplainTrackingUriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: the local store).")
]
#: evaluate: logs the evaluation and resolves runs:/ and models:/ --model values
EvaluateTrackingUriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (also used for MLflow model URIs)."),
]
#: segment: only resolves runs:/ and models:/ --model values
SegmentTrackingUriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow URI for models:/ or runs:/ --model values.")
]
#: train-segmenter: the default store is under --out
SegmenterTrackingUriOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow URI (default: sqlite store under --out).")
]
#: submit, schedule: a string, "" = the pods' MLFLOW_TRACKING_URI (the pipeline parameter's default)
RemoteTrackingUriOpt = Annotated[
    str,
    typer.Option(
        "--tracking-uri", help="MLflow URI for the tasks (default: MLFLOW_TRACKING_URI of the pods)."
    ),
]
