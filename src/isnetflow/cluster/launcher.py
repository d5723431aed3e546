"""The pipeline's distributed training as a Kubeflow Trainer TrainJob: the job one training of the
pipeline submits (its name, the ``isnetflow train`` options of its pods, its manifest), and the wait for it.

:func:`training_job` writes the manifest (:func:`~isnetflow.cluster.trainjob.trainjob_manifest`) of the
training of ``mode`` in a pipeline run; :func:`launch` submits it and waits until it has finished
(:func:`~isnetflow.cluster.trainjob.submit_and_wait`). The job's rank 0 tags its MLflow run
:data:`TRAINJOB_TAG` ``=<job name>``; finding that run and copying its outputs is the train stage's
(:func:`isnetflow.stages.train.run_trainjob`). This module does not import kfp.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isnetflow.cluster.trainjob import load_api_client, submit_and_wait, trainjob_manifest, trainjob_name
from isnetflow.config import Settings

log = logging.getLogger(__name__)

__all__ = ["TRAINJOB_TAG", "launch", "pod_namespace", "training_job"]

#: the MLflow tag naming the TrainJob a distributed training ran in (how its task finds the run)
TRAINJOB_TAG = "isnetflow.trainjob"
#: the namespace of the pod this runs in, as Kubernetes mounts it with the service account's token
_POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_namespace() -> str:
    """The namespace of the Kubernetes pod this process runs in (RuntimeError outside a pod)."""
    if not _POD_NAMESPACE_FILE.is_file():
        raise RuntimeError("no namespace given and not running in a Kubernetes pod: pass namespace")
    return _POD_NAMESPACE_FILE.read_text().strip()


def training_job(
    settings_json: str,
    mode: str,
    data_uri: str,
    masks_uri: str,
    *,
    gpus: int,
    nodes: int,
    image: str,
    pipeline_run: str,
    experiment: str,
    pod_out: str,
    namespace: str | None = None,
    tracking_uri: str | None = None,
    env: dict[str, str] | None = None,
    env_from_secrets: dict[str, tuple[str, str]] | None = None,
    pod_labels: dict[str, str] | None = None,
    service_account: str | None = None,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The TrainJob that trains ``mode`` on ``gpus`` GPUs over ``nodes`` nodes, for pipeline run
    ``pipeline_run``.

    Its pods run ``torchrun -m isnetflow.cli train`` with the settings ``settings_json`` on ``nodes`` pods
    of ``gpus / nodes`` GPUs each, read ``data_uri`` and ``masks_uri`` from the object store, write under
    ``pod_out`` and track the run in ``experiment`` (``tracking_uri``; None: the pods' own
    ``$MLFLOW_TRACKING_URI``) with the tag :data:`TRAINJOB_TAG` ``=<job name>``. The name is
    :func:`~isnetflow.cluster.trainjob.trainjob_name` of ``pipeline_run`` and ``mode``, so a retried task
    adopts its job; with ``train.checkpoint_dir`` the pods resume from their own checkpoints. ``namespace``
    None: the pod's own (:func:`pod_namespace`). The other arguments are
    :func:`~isnetflow.cluster.trainjob.trainjob_manifest`'s.

    Raises:
        ValueError: GPUs that cannot be spread evenly over the nodes, settings that do not validate, or
            an argument the manifest refuses.
    """
    if nodes < 1 or gpus < nodes or gpus % nodes:
        raise ValueError(f"{gpus} GPUs cannot be spread evenly over {nodes} node(s)")
    settings = Settings.model_validate_json(settings_json)  # refuse bad settings here, not in the pods
    name = trainjob_name(pipeline_run, mode)
    args = ["--data", data_uri, "--masks", masks_uri, "--mode", mode, "--out", pod_out,
            "--experiment", experiment, "--settings-json", settings_json, "--tag", f"{TRAINJOB_TAG}={name}",
            "--checkpoint-scope", pipeline_run]  # fmt: skip
    if tracking_uri:
        args += ["--tracking-uri", tracking_uri]
    if settings.train.checkpoint_dir:
        args.append("--resume")  # a restarted job continues from its own checkpoints
    return trainjob_manifest(
        name,
        namespace=namespace or pod_namespace(),
        image=image,
        args=args,
        num_nodes=nodes,
        gpus_per_node=gpus // nodes,
        env=env,
        env_from_secrets=env_from_secrets,
        labels={"isnetflow.io/mode": mode},
        pod_labels=pod_labels,
        service_account=service_account,
        node_selector=node_selector,
        tolerations=tolerations,
    )


def launch(manifest: Mapping[str, Any], *, api_client: Any = None, timeout_s: float) -> dict[str, Any]:
    """Submit the TrainJob ``manifest`` (or adopt it) and wait until it has finished; the final object.

    ``api_client`` None: :func:`~isnetflow.cluster.trainjob.load_api_client`'s (the pod's service
    account). A failed job raises :class:`~isnetflow.cluster.trainjob.TrainJobFailed` with its reason and
    message (see :func:`~isnetflow.cluster.trainjob.submit_and_wait` for the rest)."""
    name = manifest["metadata"]["name"]
    trainer = manifest["spec"]["trainer"]
    nodes, gpus_per_node = trainer["numNodes"], trainer["numProcPerNode"]
    log.info("submitting TrainJob %s: %d node(s) x %d GPU(s)", name, nodes, gpus_per_node)
    return submit_and_wait(
        manifest,
        api_client=api_client if api_client is not None else load_api_client(),
        timeout_s=timeout_s,
        on_event=lambda kind, obj: log.info("TrainJob %s: %s", name, kind),
    )
