"""The KServe ``InferenceService`` for a registered model version (V2 protocol, MLflow model format).

KServe cannot read MLflow's registry: its storage initializer copies a plain location (``s3://``,
``gs://``, ``https://``, ``pvc://`` ...) into ``/mnt/models``. So the manifest is written from the
registry at deploy time: :func:`resolve_model` turns ``models:/<name>@<alias>`` (or ``/<version>``) into
the version's artifact location, and :func:`inference_service` writes the resource that serves it with
the ``isnetflow-mlserver`` runtime of ``k8s/serving`` (MLServer + mlserver-mlflow in the project image,
:mod:`isnetflow.serving.mlserver_runtime`). The manifest pins the *version* (annotations name the
alias, version and run): promoting another champion means writing and applying it again, a reviewed,
reversible change rather than a pod that silently serves something else after a restart.

An MLflow server that proxies artifacts (``--serve-artifacts``, as ``k8s/`` runs it) hands out
``mlflow-artifacts:/<path>`` URIs; their bucket location is ``<artifacts destination>/<path>`` (the
server's ``--artifacts-destination``), which the caller supplies. A ``file:`` location (the local demo's
SQLite store) is refused: no cluster can read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from isnetflow.cluster.names import (
    NAMESPACE,
    PART_OF,
    PREDICTOR_ACCOUNT,
    S3_CLIENT_LABEL,
    SERVING_LABEL,
    SERVING_RUNTIME,
)
from isnetflow.names import REGISTERED_MODEL

__all__ = [
    "PREDICTOR_LABELS",
    "ModelLocation",
    "inference_service",
    "resolve_model",
    "storage_uri",
]

#: labels of the predictor pods: the NetworkPolicy of ``k8s/serving`` admits inference clients to pods
#: with the first; the second lets the storage initializer through MinIO's NetworkPolicy (dev overlay)
PREDICTOR_LABELS = {SERVING_LABEL: "champion", S3_CLIENT_LABEL: "true"}
#: the image is the runtime's, pinned to the release tag (as every isnetflow workload: docs/deploy.md);
#: the reason checkov's digest check is waived, as on the other workloads of k8s/
DIGEST_SKIP = (
    "CKV_K8S_43=The image is the isnetflow-mlserver runtime's, pinned to the release tag; a digest exists "
    "only once you build and push the image: pin it with kustomize edit set image in k8s/serving"
)
#: schemes KServe's storage initializer downloads from
STORAGE_SCHEMES = ("s3", "gs", "https", "http", "pvc", "hdfs", "webhdfs", "oci", "hf")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class ModelLocation:
    """A registered model version and where its artifacts are."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    artifact_uri: str


def resolve_model(model_uri: str, client: Any | None = None) -> ModelLocation:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> the version and its artifact URI."""
    import mlflow

    m = _MODELS_URI.match(model_uri)
    if not m:
        raise ValueError(f"{model_uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    client = client or mlflow.MlflowClient()
    name, alias = m["name"], m["alias"]
    mv = (
        client.get_model_version_by_alias(name, alias)
        if alias
        else client.get_model_version(name, m["version"])
    )
    return ModelLocation(
        name=name,
        version=str(mv.version),
        alias=alias,
        run_id=mv.run_id,
        artifact_uri=client.get_model_version_download_uri(name, str(mv.version)),
    )


def storage_uri(artifact_uri: str, artifacts_destination: str | None = None) -> str:
    """The location KServe's storage initializer can copy, for an MLflow artifact URI."""
    scheme = urlsplit(artifact_uri).scheme
    if scheme == "mlflow-artifacts":
        if not artifacts_destination:
            raise ValueError(
                f"{artifact_uri}: proxied by the MLflow server; give its --artifacts-destination (e.g. "
                "s3://mlflow-artifacts, MLFLOW_ARTIFACTS_DESTINATION in k8s/) to locate it in the bucket"
            )
        path = urlsplit(artifact_uri).path.lstrip("/")
        return f"{artifacts_destination.rstrip('/')}/{path}"
    if scheme not in STORAGE_SCHEMES:
        raise ValueError(
            f"{artifact_uri}: a {scheme or 'local'} location, which a cluster cannot read; register the "
            "model with an MLflow server whose artifacts are in S3 (k8s/, docs/deploy.md)"
        )
    return artifact_uri


def inference_service(
    location: ModelLocation,
    storage: str,
    *,
    name: str = REGISTERED_MODEL,
    namespace: str = NAMESPACE,
    min_replicas: int = 1,
    max_replicas: int = 2,
    cpu: str = "2",
    memory: str = "4Gi",
) -> dict[str, Any]:
    """The ``serving.kserve.io/v1beta1`` InferenceService serving ``location`` from ``storage``."""
    if not _NAME.match(name) or len(name) > 45:
        raise ValueError(f"{name!r}: an InferenceService name is a DNS label of at most 45 characters")
    if not 1 <= min_replicas <= max_replicas:
        raise ValueError(f"replicas: need 1 <= min ({min_replicas}) <= max ({max_replicas})")
    annotations = {
        # a plain Deployment + Service + HPA (no Knative): what the NetworkPolicy of k8s/serving expects
        "serving.kserve.io/deploymentMode": "RawDeployment",
        "isnetflow.io/registered-model": location.name,
        "isnetflow.io/model-version": location.version,
    }
    if location.alias:
        annotations["isnetflow.io/model-alias"] = location.alias
    if location.run_id:
        annotations["isnetflow.io/run-id"] = location.run_id
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/name": name},
            "annotations": annotations,
        },
        "spec": {
            "predictor": {
                "serviceAccountName": PREDICTOR_ACCOUNT,
                "automountServiceAccountToken": False,
                "minReplicas": min_replicas,
                "maxReplicas": max_replicas,
                "labels": dict(PREDICTOR_LABELS),
                # KServe copies these to the predictor Deployment (what checkov reads)
                "annotations": {"checkov.io/skip1": DIGEST_SKIP},
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "fsGroup": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "model": {
                    "modelFormat": {"name": "mlflow", "version": "2"},
                    "protocolVersion": "v2",
                    "runtime": SERVING_RUNTIME,
                    "storageUri": storage,
                    "resources": {
                        "requests": {"cpu": cpu, "memory": memory},
                        "limits": {"cpu": cpu, "memory": memory},
                    },
                },
            }
        },
    }
