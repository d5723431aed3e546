"""The MLflow model registry commands: registry show, registry kserve."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from isnetflow.cli.common import JsonOpt, TrackingUriOpt
from isnetflow.cluster.names import NAMESPACE
from isnetflow.names import REGISTERED_MODEL


def show(
    as_json: JsonOpt = False,
    name: Annotated[
        list[str] | None, typer.Option("--name", help="Only this registered model (repeatable).")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Registered models, versions, aliases, gate results and lineage."""
    from isnetflow.registry.tracking import resolve_tracking_uri
    from isnetflow.stages import promote as stage

    try:
        models = stage.show(tracking_uri=resolve_tracking_uri(tracking_uri), names=name or None)
    except stage.PromoteStageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(models, indent=2))
        return
    if not models:
        typer.echo("no registered models")
    for m in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in m["aliases"].items()) or "no aliases"
        typer.echo(f"{m['name']}  ({aliases})")
        for v in m["versions"]:
            gates = " ".join(
                f"{g}:{'ok' if r.get('passed') == 'true' else 'FAIL'}" for g, r in v["gates"].items()
            )
            tags = ",".join(v["aliases"])
            typer.echo(f"  v{v['version']:<4} {tags:<28} {v['decision'] or '-':<9} {gates}")


def kserve(
    model: Annotated[
        str, typer.Option("--model", "-m", help="models:/<name>@<alias> or models:/<name>/<version>.")
    ] = f"models:/{REGISTERED_MODEL}@champion",
    name: Annotated[str, typer.Option("--name", help="InferenceService name.")] = REGISTERED_MODEL,
    namespace: Annotated[str, typer.Option("--namespace")] = NAMESPACE,
    artifacts_destination: Annotated[
        str | None,
        typer.Option(
            "--artifacts-destination",
            envvar="MLFLOW_ARTIFACTS_DESTINATION",
            help="The MLflow server's --artifacts-destination, to locate proxied (mlflow-artifacts:) models.",
        ),
    ] = None,
    min_replicas: Annotated[int, typer.Option("--min-replicas")] = 1,
    max_replicas: Annotated[int, typer.Option("--max-replicas")] = 2,
    cpu: Annotated[str, typer.Option("--cpu", help="CPU request = limit of the predictor.")] = "2",
    memory: Annotated[str, typer.Option("--memory", help="Memory request = limit of the predictor.")] = "4Gi",
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """The KServe InferenceService (V2 protocol) serving a registered version, as YAML on stdout.

    Apply k8s/serving first (runtime, service account, network policy); the manifest pins the version
    the alias points to now, with the registry's artifact location as its storageUri.
    """
    import yaml
    from mlflow.exceptions import MlflowException

    from isnetflow.cluster.kserve import inference_service, resolve_model, storage_uri
    from isnetflow.registry.tracking import resolve_tracking_uri, scoped_tracking

    try:
        with scoped_tracking(resolve_tracking_uri(tracking_uri)) as client:
            location = resolve_model(model, client)
        storage = storage_uri(location.artifact_uri, artifacts_destination)
        manifest = inference_service(
            location,
            storage,
            name=name,
            namespace=namespace,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            cpu=cpu,
            memory=memory,
        )
    except (ValueError, MlflowException) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        typer.echo(f"error: {model}: {message.splitlines()[0] if message else exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(yaml.safe_dump(manifest, sort_keys=False), nl=False)
