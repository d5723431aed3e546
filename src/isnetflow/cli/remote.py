"""Kubeflow Pipelines commands: compile, submit, schedule (kfp is imported only when one runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from isnetflow.cli.common import (
    ConfigOpt,
    ExternalOpt,
    InputOpt,
    LabelsOpt,
    RemoteTrackingUriOpt,
    load_settings,
    split_sites,
)
from isnetflow.config import Settings
from isnetflow.names import EXPERIMENT

HostOpt = Annotated[
    str,
    typer.Option(
        "--host",
        envvar="KF_PIPELINES_ENDPOINT",
        help="Kubeflow Pipelines API URL, e.g. http://127.0.0.1:8080.",
    ),
]
NamespaceOpt = Annotated[
    str | None, typer.Option("--namespace", help="Profile namespace (multi-user Kubeflow Pipelines).")
]
#: the KFP experiment (train's and evaluate's --experiment is the MLflow one: common.MlflowExperimentOpt)
ExperimentOpt = Annotated[str, typer.Option("--experiment", help="KFP experiment (created when missing).")]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="KF_PIPELINES_TOKEN", show_envvar=True, help="Bearer token for the KFP API."
    ),
]
ImageOpt = Annotated[
    str | None, typer.Option("--image", help="Container image of every task (default: components/image.py).")
]
SkipOpt = Annotated[
    bool,
    typer.Option(
        "--skip-if-unchanged/--always-train",
        help="End the run before training when data and recipe match the champion or a refused candidate.",
    ),
]
ServiceAccountOpt = Annotated[
    str | None, typer.Option("--service-account", help="Kubernetes service account of the run's pods.")
]
GpusOpt = Annotated[
    int,
    typer.Option(
        "--gpus",
        min=1,
        help="GPUs per training; above 1 each training runs as a Kubeflow Trainer TrainJob (torchrun).",
    ),
]
NodesOpt = Annotated[int, typer.Option("--nodes", min=1, help="Nodes to spread --gpus over (evenly).")]
UiHostOpt = Annotated[
    str | None, typer.Option("--ui-host", help="KFP UI base URL for the printed link (default: --host).")
]


def _remote() -> Any:
    import importlib

    return importlib.import_module("isnetflow_kfp.pipelines.remote")  # the kfp layer, loaded lazily


def _remote_arguments(
    remote: Any,
    settings: Settings,
    input_uri: str | None,
    labels: str | None,
    external_sites: list[str] | None,
    tracking_uri: str,
    skip_if_unchanged: bool,
    gpus: int = 1,
    nodes: int = 1,
) -> dict[str, Any]:
    try:
        return dict(
            remote.pipeline_arguments(
                settings,
                input_uri=input_uri or "",
                labels_uri=labels or "",
                external_sites=split_sites(external_sites),
                tracking_uri=tracking_uri,
                skip_if_unchanged=skip_if_unchanged,
                train_gpus=gpus,
                train_nodes=nodes,
            )
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def compile_(
    out: Annotated[Path, typer.Option("--out", "-o", help="Pipeline YAML to write.")] = Path("pipeline.yaml"),
    image: ImageOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compile the training pipeline to a KFP YAML (the config's settings become the default)."""
    remote = _remote()
    path = remote.compile_pipeline(out, load_settings(config), image=image)
    typer.echo(f"wrote {path}")


def _remote_call(remote: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an ``isnetflow_kfp.pipelines.remote`` function; a RemoteError becomes a one-line error and
    exit status 1."""
    try:
        return fn(*args, **kwargs)
    except remote.RemoteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def submit(
    host: HostOpt,
    namespace: NamespaceOpt = None,
    experiment: ExperimentOpt = EXPERIMENT,
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="Run name (default: pipeline name + time).")
    ] = None,
    input_uri: InputOpt = None,
    labels: LabelsOpt = None,
    external_sites: ExternalOpt = None,
    tracking_uri: RemoteTrackingUriOpt = "",
    skip_if_unchanged: SkipOpt = True,
    gpus: GpusOpt = 1,
    nodes: NodesOpt = 1,
    token: TokenOpt = None,
    service_account: ServiceAccountOpt = None,
    image: ImageOpt = None,
    ui_host: UiHostOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start one run of the training pipeline on a Kubeflow Pipelines server; print its id and URL."""
    remote = _remote()
    settings = load_settings(config)
    arguments = _remote_arguments(
        remote, settings, input_uri, labels, external_sites, tracking_uri, skip_if_unchanged, gpus, nodes
    )
    result = _remote_call(
        remote,
        remote.submit,
        host,
        arguments,
        settings,
        namespace=namespace,
        experiment=experiment,
        run_name=run_name,
        token=token,
        service_account=service_account,
        image=image,
        ui_host=ui_host,
    )
    typer.echo(f"run id:  {result.run_id}")
    typer.echo(f"run URL: {result.url}")


def schedule(
    host: HostOpt,
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            help="6 fields: second minute hour day-of-month month day-of-week ('0 0 2 * * 0' = Sun 02:00).",
        ),
    ],
    namespace: NamespaceOpt = None,
    experiment: ExperimentOpt = EXPERIMENT,
    job_name: Annotated[str, typer.Option("--job-name", help="Recurring run name.")] = "isnetflow-retraining",
    input_uri: InputOpt = None,
    labels: LabelsOpt = None,
    external_sites: ExternalOpt = None,
    tracking_uri: RemoteTrackingUriOpt = "",
    skip_if_unchanged: SkipOpt = True,
    gpus: GpusOpt = 1,
    nodes: NodesOpt = 1,
    token: TokenOpt = None,
    service_account: ServiceAccountOpt = None,
    image: ImageOpt = None,
    ui_host: UiHostOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Schedule retraining: an enabled recurring run (one at a time, no catch-up); print its id."""
    from isnetflow.cron import CronError, validate_cron

    try:
        cron = validate_cron(cron)
    except CronError as exc:
        typer.echo(f"error: --cron: {exc}", err=True)
        raise typer.Exit(2) from exc
    remote = _remote()
    settings = load_settings(config)
    arguments = _remote_arguments(
        remote, settings, input_uri, labels, external_sites, tracking_uri, skip_if_unchanged, gpus, nodes
    )
    result = _remote_call(
        remote,
        remote.schedule,
        host,
        cron,
        arguments,
        settings,
        namespace=namespace,
        experiment=experiment,
        job_name=job_name,
        token=token,
        service_account=service_account,
        image=image,
        ui_host=ui_host,
    )
    typer.echo(f"recurring run id:  {result.recurring_run_id}")
    typer.echo(f"recurring run URL: {result.url}")
