"""The training pipeline on a Kubeflow Pipelines server: compile, submit a run, schedule retraining.

Behind ``isnetflow compile``, ``isnetflow submit`` and ``isnetflow schedule``. Every call to the server
goes through :class:`kfp.Client` (KFP v2beta1 REST API). Before the client is built the server's
``/apis/v2beta1/healthz`` is read once with a timeout, so an unreachable host, a wrong URL or a missing
token fails at once with one line (:class:`RemoteError`) instead of kfp's retries; errors from the API
afterwards are turned into the same one-line form.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler

from isnetflow.config import Settings
from isnetflow.cron import validate_cron
from isnetflow.names import EXPERIMENT
from isnetflow_kfp.components.image import IMAGE
from isnetflow_kfp.pipelines.training import PIPELINE_NAME, training_pipeline

__all__ = [
    "RemoteError",
    "Scheduled",
    "Submitted",
    "compile_pipeline",
    "pipeline_arguments",
    "schedule",
    "submit",
]

HEALTHZ = "/apis/v2beta1/healthz"
DEFAULT_EXPERIMENT = EXPERIMENT
DEFAULT_JOB_NAME = "isnetflow-retraining"


class RemoteError(RuntimeError):
    """The server cannot be used or refused the request (a one-line message naming the host)."""


@dataclass(frozen=True)
class Submitted:
    """A started pipeline run: its id, its page in the Kubeflow Pipelines UI, experiment and name."""

    run_id: str
    url: str
    experiment_id: str
    run_name: str


@dataclass(frozen=True)
class Scheduled:
    """A created recurring run: its id, its page in the UI, experiment, job name and cron expression."""

    recurring_run_id: str
    url: str
    experiment_id: str
    job_name: str
    cron: str


def compile_pipeline(out: str | Path, settings: Settings | None = None, *, image: str | None = None) -> Path:
    """Write the pipeline YAML with ``settings`` as the default of ``settings_json`` (and ``image``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"settings_json": settings.model_dump_json()} if settings is not None else None
    compiler.Compiler().compile(training_pipeline, str(out), pipeline_parameters=params)
    if image and image != IMAGE:
        docs = list(yaml.safe_load_all(out.read_text()))
        for executor in docs[0]["deploymentSpec"]["executors"].values():
            container = executor.get("container", {})
            if container.get("image") == IMAGE:
                container["image"] = image
        out.write_text(yaml.safe_dump_all(docs, sort_keys=True, width=1 << 30))
    return out


def pipeline_arguments(
    settings: Settings,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: Sequence[str] = (),
    tracking_uri: str = "",
    skip_if_unchanged: bool = True,
    train_gpus: int = 1,
    train_nodes: int = 1,
) -> dict[str, Any]:
    """The run's parameters (``runtime_config.parameters``): every pipeline input, explicitly.

    ``train_gpus`` above 1: each training runs as a Kubeflow Trainer TrainJob on ``train_nodes`` nodes."""
    if train_gpus < 1 or train_nodes < 1 or train_gpus % train_nodes:
        raise ValueError(f"{train_gpus} training GPUs cannot be spread evenly over {train_nodes} node(s)")
    return {
        "settings_json": settings.model_dump_json(),
        "input_uri": input_uri,
        "labels_uri": labels_uri,
        "external_sites_json": json.dumps(list(external_sites)),
        "tracking_uri": tracking_uri,
        "skip_if_unchanged": skip_if_unchanged,
        "train_gpus": train_gpus,
        "train_nodes": train_nodes,
    }


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _api_message(body: Any) -> str:
    """The ``message`` of a KFP (grpc-gateway) error body, else the body itself."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        data = json.loads(body or "")
    except (TypeError, ValueError):
        return _one_line(body or "")
    if isinstance(data, dict):
        return _one_line(str(data.get("message") or data.get("error") or data))
    return _one_line(str(data))


def _probe(host: str, token: str | None, namespace: str | None, timeout: float) -> None:
    """GET ``/apis/v2beta1/healthz`` once; :class:`RemoteError` unless it is a KFP API answering JSON."""
    url = host + HEALTHZ
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # as kfp.Client: no env proxies
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        hint = {
            401: "; give a token with --token or KF_PIPELINES_TOKEN",
            403: "; give a token with --token or KF_PIPELINES_TOKEN",
            404: "; is this the Kubeflow Pipelines API (v2)?",
        }.get(exc.code, "")
        raise RemoteError(
            f"Kubeflow Pipelines at {host}: {HEALTHZ} answered HTTP {exc.code} "
            f"{_api_message(exc.read()) or exc.reason}{hint}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(f"cannot reach Kubeflow Pipelines at {host}: {_one_line(str(reason))}") from exc
    try:
        health = json.loads(body)
    except ValueError as exc:
        raise RemoteError(
            f"Kubeflow Pipelines at {host}: {HEALTHZ} did not answer JSON (a login page? give --token)"
        ) from exc
    if isinstance(health, dict) and health.get("multi_user") and not namespace:
        raise RemoteError(
            f"Kubeflow Pipelines at {host} is multi-user: give --namespace (your profile's namespace)"
        )


@contextlib.contextmanager
def _api_errors(host: str) -> Iterator[None]:
    """Turn kfp/kfp_server_api/urllib3 failures into :class:`RemoteError`; keep kfp's prints off stdout."""
    import kfp_server_api
    import urllib3

    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"kfp\..*")
            yield
    except kfp_server_api.ApiException as exc:
        if exc.status == 0:  # kfp_server_api's own wrapping of SSL/transport errors
            raise RemoteError(
                f"cannot reach Kubeflow Pipelines at {host}: {_one_line(str(exc.reason))}"
            ) from exc
        raise RemoteError(
            f"Kubeflow Pipelines API at {host} answered HTTP {exc.status} {exc.reason}: "
            f"{_api_message(exc.body)}"
        ) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise RemoteError(f"cannot reach Kubeflow Pipelines at {host}: {_one_line(str(exc))}") from exc
    except (TimeoutError, ValueError) as exc:  # kfp: healthz retries exhausted, ambiguous experiment names
        raise RemoteError(f"Kubeflow Pipelines at {host}: {_one_line(str(exc))}") from exc


def _client(host: str, namespace: str | None, token: str | None, timeout: float) -> Any:
    """A :class:`kfp.Client` for ``host`` (after the healthz probe); call inside :func:`_api_errors`."""
    import kfp

    _probe(host, token, namespace, timeout)
    # kfp.Client's default namespace "kubeflow" means "single-user, or take it from the kfp context"
    return kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token or None)


def _check_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if not host.startswith(("http://", "https://")):
        raise RemoteError(f"--host {host!r}: give the URL with its scheme, e.g. http://127.0.0.1:8080")
    return host


def _ui(host: str, ui_host: str | None) -> str:
    return (ui_host or host).rstrip("/")


def submit(
    host: str,
    arguments: dict[str, Any],
    settings: Settings,
    *,
    namespace: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    token: str | None = None,
    service_account: str | None = None,
    image: str | None = None,
    ui_host: str | None = None,
    timeout: float = 10.0,
) -> Submitted:
    """Compile the pipeline and start one run in ``experiment`` (created when missing)."""
    host = _check_host(host)
    run_name = run_name or f"{PIPELINE_NAME} {datetime.now():%Y-%m-%d %H-%M-%S}"
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", settings, image=image)
        with _api_errors(host):
            client = _client(host, namespace, token, timeout)
            result = client.create_run_from_pipeline_package(
                str(package),
                arguments=arguments,
                run_name=run_name,
                experiment_name=experiment,
                namespace=namespace,
                service_account=service_account,
            )
            experiment_id = str(result.run_info.experiment_id or "")
    run_id = str(result.run_id)
    return Submitted(run_id, f"{_ui(host, ui_host)}/#/runs/details/{run_id}", experiment_id, run_name)


def schedule(
    host: str,
    cron: str,
    arguments: dict[str, Any],
    settings: Settings,
    *,
    namespace: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    job_name: str = DEFAULT_JOB_NAME,
    token: str | None = None,
    service_account: str | None = None,
    image: str | None = None,
    ui_host: str | None = None,
    timeout: float = 10.0,
) -> Scheduled:
    """Create an enabled recurring run (6-field ``cron``, one run at a time, no catch-up)."""
    cron = validate_cron(cron)  # before anything is sent
    host = _check_host(host)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", settings, image=image)
        with _api_errors(host):
            client = _client(host, namespace, token, timeout)
            exp = client.create_experiment(name=experiment, namespace=namespace)
            job = client.create_recurring_run(
                experiment_id=exp.experiment_id,
                job_name=job_name,
                description=f"{PIPELINE_NAME} at '{cron}'; training is skipped while the data is unchanged",
                cron_expression=cron,
                max_concurrency=1,
                no_catchup=True,
                params=arguments,
                pipeline_package_path=str(package),
                enabled=True,
                service_account=service_account,
            )
    rid = str(job.recurring_run_id)
    return Scheduled(
        rid, f"{_ui(host, ui_host)}/#/recurringrun/details/{rid}", str(exp.experiment_id), job_name, cron
    )
