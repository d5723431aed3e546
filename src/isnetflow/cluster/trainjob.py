"""Multi-GPU training on Kubernetes: a Kubeflow Trainer v2 ``TrainJob`` that runs ``isnetflow train``
under ``torchrun`` on N nodes × G GPUs, submitted and waited for from the pipeline's training task.

:func:`trainjob_manifest` writes the custom resource (``trainer.kubeflow.org/v1alpha1``, kind
``TrainJob``) for a ``ClusterTrainingRuntime`` with the Torch ML policy (``torch-distributed`` by
default). The trainer container runs ``torchrun --module isnetflow.cli train <args>``: the Trainer's
Torch plugin leaves the command as given and sets, on the trainer container of every node,
``PET_NNODES`` (= ``numNodes``), ``PET_NPROC_PER_NODE`` (= ``numProcPerNode``), ``PET_NODE_RANK`` (the
Job completion index), ``PET_MASTER_ADDR`` (``<name>-node-0-0.<name>``, node 0's pod behind the
JobSet's headless service) and ``PET_MASTER_PORT`` (29500), which torchrun reads as the defaults of
``--nnodes``, ``--nproc-per-node``, ``--node-rank``, ``--master-addr`` and ``--master-port``. So the
topology is written once, in ``numNodes`` / ``numProcPerNode``, and never repeated on the command line.

:func:`submit_and_wait` creates the TrainJob and watches it until its ``Complete`` condition is true
(the final object is returned) or its ``Failed`` condition is (:class:`TrainJobFailed`). The TrainJob
controller sets only three condition types: ``Suspended`` (the job is or was suspended, e.g. by Kueue:
the launcher keeps waiting), ``Complete`` and ``Failed`` (copied from the JobSet's, or ``Failed`` with
reason ``DeadlineExceeded`` / ``TrainingRuntimeNotSupported`` set by the controller itself). A
``Created`` condition existed in early v2 builds and was removed (kubeflow/trainer#2621); nothing here
waits for it.

**A retried task adopts its TrainJob.** Names are meant to be deterministic (derived from the pipeline
run and task), so a retry of the same task, after its pod died or lost the watch, re-submits the same
name: the API server answers 409 AlreadyExists, and the launcher reads the existing TrainJob and waits
for it instead of failing or starting a second training. The existing job must be the same training
(same ``spec.runtimeRef.name`` and ``spec.trainer``), else :class:`TrainJobConflict`. An adopted job
that has already finished is reported at once: ``Complete`` returns it, ``Failed`` raises
:class:`TrainJobFailed` again. The launcher never deletes a TrainJob (its role has no ``delete``), so
re-running a training that failed needs a new name (or someone deleting the old job).

**The training pods are hardened like the rest of the namespace.** Every TrainJob carries one entry
of ``spec.runtimePatches`` (manager :data:`PATCH_MANAGER`) for the runtime's trainer Job ``node``: its
pods run as the image's user (10001:10001, non-root, seccomp ``RuntimeDefault``), the container ``node``
without privilege escalation or capabilities and with a read-only root filesystem (emptyDir volumes at
``/tmp`` and at the image's ``$HOME``, so ``--out`` must lie under ``/tmp``), and the pods are labelled
``isnetflow.io/training-pod: "true"`` and ``isnetflow.io/trainjob: <name>``: the NetworkPolicy
``training-pods`` (k8s/base/networkpolicies.yaml) lets training pods reach each other on every TCP port
(torchrun's rendezvous on 29500, NCCL's sockets), and nothing else reach them. The labels the pods need
to reach the namespace's servers (MLflow, MinIO), their service account, node selector and tolerations
are the caller's (:func:`trainjob_manifest`'s ``pod_labels``, ``service_account``, ``node_selector``,
``tolerations``). Only what the Trainer (v2.3.0) lets a runtime patch set is set: a patch cannot
disable the service account token (``automountServiceAccountToken``), so pick an account that does
(``isnetflow-workload``).

The service account of the task needs, in its namespace, ``create``, ``get`` and ``watch`` on
``trainjobs.trainer.kubeflow.org`` (``k8s/base/rbac.yaml``; the field-selected watch is authorized as
``watch`` alone, so no ``list``). This module does not import kfp.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from isnetflow.cluster.names import PART_OF, TRAINING_POD_LABEL, TRAINJOB_LABEL

__all__ = [
    "API_VERSION",
    "COMMAND",
    "CONDITION_COMPLETE",
    "CONDITION_FAILED",
    "CONDITION_SUSPENDED",
    "GROUP",
    "KIND",
    "MODES",
    "PATCH_MANAGER",
    "PLURAL",
    "VERSION",
    "TrainJobConflict",
    "TrainJobFailed",
    "load_api_client",
    "submit_and_wait",
    "trainjob_manifest",
    "trainjob_name",
]

log = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainJob"
PLURAL = "trainjobs"
#: condition types of a TrainJob's status (kubeflow/trainer pkg/apis/trainer/v1alpha1/trainjob_types.go)
CONDITION_SUSPENDED = "Suspended"
CONDITION_COMPLETE = "Complete"
CONDITION_FAILED = "Failed"

#: the trainer container's command: torchrun (topology from the PET_* variables the Torch plugin sets)
#: running ``python -m isnetflow.cli train`` in each of its worker processes; ``args`` are train's options
COMMAND = ("torchrun", "--module", "isnetflow.cli", "train")
#: what every TrainJob of the project carries; ``part-of`` cannot be overridden
DEFAULT_LABELS = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": "training"}
GPU_RESOURCE = "nvidia.com/gpu"
#: torchrun's variables, set by the Torch plugin; the Trainer's webhook refuses a TrainJob that sets them
RESERVED_ENV = frozenset(
    {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
)
#: the trainer's replicated Job in the built-in runtimes ("node"): JobSet names its pods
#: ``<name>-node-<job index>-<completion index>-<5 random>``, and refuses a JobSet whose longest pod name
#: would not be a DNS-1035 label, which bounds the TrainJob's name further than 63 characters
TRAINER_JOB = "node"
#: the owner of the TrainJob's runtime patch (``spec.runtimePatches`` is a list-map keyed by manager, which
#: the Trainer's webhook requires to be a domain-prefixed path)
PATCH_MANAGER = "isnetflow.io/pipeline"
#: pod label prefixes the JobSet, Job and Trainer controllers set themselves
RESERVED_LABEL_PREFIXES = ("jobset.sigs.k8s.io", "batch.kubernetes.io", "trainer.kubeflow.org")
#: the project image's user and group (Dockerfile: useradd --uid 10001, USER 10001:10001) and $HOME
RUN_AS_USER = 10001
RUN_AS_GROUP = 10001
IMAGE_HOME = "/home/isnetflow"
#: the writable (emptyDir) mounts of the trainer container, whose root filesystem is read-only: /tmp
#: (torchrun's logs, --out, compiler caches) and $HOME (~/.cache, ~/.triton, ~/.nv: torch, Triton, CUDA)
SCRATCH_MOUNTS = {"isnetflow-tmp": "/tmp", "isnetflow-home": IMAGE_HOME}
#: the classifiers ``isnetflow train --mode`` trains (isnetflow.config's train.mode); :func:`trainjob_name`
MODES = ("isnet", "standard")
#: limits of the CRD (MaxItems of command/args/env, MaxLength of image)
MAX_ITEMS = 128
MAX_IMAGE_LENGTH = 500
_INT32_MAX = 2**31 - 1

#: seconds: a create/get request; a watch request's server-side window (it is renewed until the timeout)
REQUEST_TIMEOUT_S = 30.0
WATCH_WINDOW_S = 300.0
#: seconds a watch may stay silent beyond its window before the client gives up on the connection
_WATCH_READ_GRACE_S = 30.0

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

EventCallback = Callable[[str, dict[str, Any]], None]


class TrainJobFailed(RuntimeError):
    """The TrainJob's ``Failed`` condition is true (or the TrainJob was deleted before it finished).

    ``reason`` and ``message`` are the condition's (e.g. ``DeadlineExceeded``, or the JobSet's reason
    when a node's Job failed); ``trainjob`` is the last object seen, when there is one.
    """

    def __init__(
        self, namespace: str, name: str, reason: str, message: str, trainjob: dict[str, Any] | None = None
    ) -> None:
        """The TrainJob ``namespace/name`` and its failure; the message names all three."""
        self.namespace, self.name, self.reason, self.message = namespace, name, reason, message
        self.trainjob = trainjob
        super().__init__(f"TrainJob {namespace}/{name} failed: {reason or '(no reason)'}: {message}")


class TrainJobConflict(RuntimeError):
    """A TrainJob of that name already exists and is not the training that was submitted."""


# -- the manifest ------------------------------------------------------------------------------------------


def _check_int(what: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _INT32_MAX:
        raise ValueError(f"{what} must be an integer from {minimum} to {_INT32_MAX}, got {value!r}")
    return value


def _check_name(name: object, num_nodes: int) -> str:
    if not isinstance(name, str) or not _DNS1035_LABEL.match(name):
        raise ValueError(
            f"TrainJob name {name!r} is not a DNS-1035 label: lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit"
        )
    # JobSet's check: <name>-node-<job index 0>-<largest completion index>-abcde must be a DNS-1035 label
    longest_pod = f"{name}-{TRAINER_JOB}-0-{num_nodes - 1}-abcde"
    if len(name) > 63 or len(longest_pod) > 63:
        limit = 63 - (len(longest_pod) - len(name))
        raise ValueError(
            f"TrainJob name {name!r} has {len(name)} characters; with {num_nodes} node(s) it may have at "
            f"most {limit}: JobSet names the pods '{longest_pod}', which must fit in 63 characters"
        )
    return name


def _is_label_key(key: object) -> bool:
    """A qualified name: ``[prefix/]name``, name of at most 63 characters, prefix a DNS-1123 subdomain."""
    if not isinstance(key, str):
        return False
    prefix, slash, name = key.rpartition("/")
    return bool(
        len(name) <= 63
        and _LABEL_NAME.match(name)
        and (not slash or (len(prefix) <= 253 and _DNS1123_SUBDOMAIN.match(prefix)))
    )


def _is_label_value(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def _label_map(what: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    """``labels`` checked as Kubernetes labels (label keys, label values); ``what`` names them in errors."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ValueError(f"{what}s must be a mapping of str to str, got {labels!r}")
    for key, value in labels.items():
        if not isinstance(value, str) or not _is_label_key(key):
            raise ValueError(f"{what} {key!r}: not a valid Kubernetes label key (or its value is not a str)")
        if not _is_label_value(value):
            raise ValueError(f"{what} {key}={value!r}: not a valid Kubernetes label value")
    return dict(labels)


def _check_labels(labels: Mapping[str, str] | None, what: str = "label") -> dict[str, str]:
    out = dict(DEFAULT_LABELS)
    for key, value in _label_map(what, labels).items():
        if key == "app.kubernetes.io/part-of" and value != DEFAULT_LABELS[key]:
            raise ValueError(f"{what} {key} is {DEFAULT_LABELS[key]!r} on every isnetflow resource")
        out[key] = value
    return out


def _pod_labels(name: str, pod_labels: Mapping[str, str] | None) -> dict[str, str]:
    fixed = {TRAINING_POD_LABEL: "true", TRAINJOB_LABEL: name}
    out = _check_labels(pod_labels, "pod label")
    for key, value in out.items():
        if key.rpartition("/")[0] in RESERVED_LABEL_PREFIXES:
            raise ValueError(
                f"pod label {key}: labels under {key.rpartition('/')[0]}/ are set by the JobSet, Job and "
                "Trainer controllers"
            )
        if key in fixed and value != fixed[key]:
            raise ValueError(
                f"pod label {key} is {fixed[key]!r} on the pods of TrainJob {name}: the NetworkPolicy "
                "training-pods (k8s/base/networkpolicies.yaml) selects them by it"
            )
    return out | fixed


_TOLERATION_FIELDS = ("key", "operator", "value", "effect", "tolerationSeconds")
_TAINT_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})


def _tolerations(tolerations: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The tolerations as the API server validates them (core/v1 Toleration; operators Equal and Exists)."""
    if tolerations is None:
        return []
    if isinstance(tolerations, str | Mapping) or not isinstance(tolerations, Sequence):
        raise ValueError(f"tolerations must be a list of mappings (core/v1 Toleration), got {tolerations!r}")
    out: list[dict[str, Any]] = []
    for i, toleration in enumerate(tolerations):
        where = f"tolerations[{i}]"
        if not isinstance(toleration, Mapping):
            raise ValueError(f"{where}: expected a mapping (core/v1 Toleration), got {toleration!r}")
        extra = set(toleration) - set(_TOLERATION_FIELDS)
        if extra:
            raise ValueError(
                f"{where}: unknown field(s) {sorted(map(str, extra))}; a Toleration has {_TOLERATION_FIELDS}"
            )
        key, value = toleration.get("key", ""), toleration.get("value", "")
        operator, effect = toleration.get("operator", "Equal"), toleration.get("effect", "")
        if operator not in ("Equal", "Exists"):
            raise ValueError(f"{where}: operator {operator!r}: expected 'Equal' or 'Exists'")
        if key != "" and not _is_label_key(key):
            raise ValueError(f"{where}: key {key!r} is not a valid taint key (a label key)")
        if key == "" and operator != "Exists":
            raise ValueError(f"{where}: an empty key (every taint) needs operator 'Exists'")
        if operator == "Exists" and value != "":
            raise ValueError(f"{where}: operator 'Exists' takes no value, got {value!r}")
        if operator == "Equal" and not _is_label_value(value):
            raise ValueError(f"{where}: value {value!r} is not a valid taint value (a label value)")
        if effect != "" and effect not in _TAINT_EFFECTS:
            raise ValueError(
                f"{where}: effect {effect!r}: expected one of {sorted(_TAINT_EFFECTS)} (or none)"
            )
        if "tolerationSeconds" in toleration:
            seconds = toleration["tolerationSeconds"]
            if isinstance(seconds, bool) or not isinstance(seconds, int):
                raise ValueError(f"{where}: tolerationSeconds must be an integer, got {seconds!r}")
            if effect != "NoExecute":
                raise ValueError(f"{where}: tolerationSeconds needs effect 'NoExecute'")
        out.append({field: toleration[field] for field in _TOLERATION_FIELDS if field in toleration})
    return out


def _runtime_patch(
    name: str,
    pod_labels: Mapping[str, str] | None,
    service_account: str | None,
    node_selector: Mapping[str, str] | None,
    tolerations: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """The ``spec.runtimePatches`` entry for the trainer Job's pods: labels, account, placement, hardening."""
    pod: dict[str, Any] = {}
    if service_account is not None:
        if (
            not isinstance(service_account, str)
            or len(service_account) > 253
            or not _DNS1123_SUBDOMAIN.match(service_account)
        ):
            raise ValueError(f"service_account {service_account!r} is not a valid ServiceAccount name")
        pod["serviceAccountName"] = service_account
    selector = _label_map("node selector", node_selector)
    if selector:
        pod["nodeSelector"] = selector
    toleration_list = _tolerations(tolerations)
    if toleration_list:
        pod["tolerations"] = toleration_list
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["volumes"] = [{"name": volume, "emptyDir": {}} for volume in SCRATCH_MOUNTS]
    pod["containers"] = [
        {
            "name": TRAINER_JOB,  # the trainer container of the built-in runtimes is named like its Job
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [{"name": volume, "mountPath": path} for volume, path in SCRATCH_MOUNTS.items()],
        }
    ]
    job = {"metadata": {"labels": _pod_labels(name, pod_labels)}, "spec": pod}
    return {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {
            "template": {
                "spec": {"replicatedJobs": [{"name": TRAINER_JOB, "template": {"spec": {"template": job}}}]}
            }
        },
    }


def _check_env_name(name: object) -> str:
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise ValueError(
            f"environment variable name {name!r}: letters, digits, '_', '-', '.', not a digit first"
        )
    if name in RESERVED_ENV:
        raise ValueError(
            f"environment variable {name} is set by the Trainer's Torch plugin (from numNodes and "
            "numProcPerNode); the Trainer refuses a TrainJob that sets it"
        )
    return name


def _env(
    env: Mapping[str, str] | None, secrets: Mapping[str, tuple[str, str]] | None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, value in (env or {}).items():
        if not isinstance(value, str):
            raise ValueError(f"environment variable {name}: value must be a str, got {value!r}")
        out.append({"name": _check_env_name(name), "value": value})
    for name, ref in (secrets or {}).items():
        if name in (env or {}):
            raise ValueError(f"environment variable {name} is given both as a value and from a Secret")
        if not (isinstance(ref, tuple | list) and len(ref) == 2):
            raise ValueError(f"environment variable {name}: expected (secret name, key), got {ref!r}")
        secret, key = ref
        if not (isinstance(secret, str) and len(secret) <= 253 and _DNS1123_SUBDOMAIN.match(secret)):
            raise ValueError(f"environment variable {name}: {secret!r} is not a valid Secret name")
        if not (isinstance(key, str) and len(key) <= 253 and _SECRET_KEY.match(key)):
            raise ValueError(f"environment variable {name}: {key!r} is not a valid Secret key")
        out.append(
            {"name": _check_env_name(name), "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        )
    if len(out) > MAX_ITEMS:
        raise ValueError(f"{len(out)} environment variables: the TrainJob takes at most {MAX_ITEMS}")
    return out


def _resources(
    resources_per_node: Mapping[str, Mapping[str, str | int]] | None, gpus_per_node: int
) -> dict[str, dict[str, str | int]]:
    extra = set(resources_per_node or {}) - {"requests", "limits"}
    if extra:
        raise ValueError(f"resources_per_node takes 'requests' and 'limits', not {sorted(extra)}")
    out: dict[str, dict[str, str | int]] = {
        part: dict(values) for part, values in (resources_per_node or {}).items() if values
    }
    for part, values in out.items():
        for resource, quantity in values.items():
            if (
                not isinstance(resource, str)
                or isinstance(quantity, bool)
                or not isinstance(quantity, str | int)
            ):
                raise ValueError(f"resources_per_node.{part}: {resource!r}: {quantity!r} is not a quantity")
            if resource == GPU_RESOURCE and str(quantity) != str(gpus_per_node):
                raise ValueError(
                    f"resources_per_node.{part} asks for {quantity} {GPU_RESOURCE} but gpus_per_node is "
                    f"{gpus_per_node}: give the GPU count once, as gpus_per_node"
                )
    out.setdefault("limits", {})[GPU_RESOURCE] = str(gpus_per_node)
    return out


def trainjob_manifest(
    name: str,
    *,
    namespace: str,
    image: str,
    args: Sequence[str],
    num_nodes: int = 1,
    gpus_per_node: int = 1,
    runtime: str = "torch-distributed",
    env: Mapping[str, str] | None = None,
    env_from_secrets: Mapping[str, tuple[str, str]] | None = None,
    labels: Mapping[str, str] | None = None,
    resources_per_node: Mapping[str, Mapping[str, str | int]] | None = None,
    pod_labels: Mapping[str, str] | None = None,
    service_account: str | None = None,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The TrainJob that runs ``isnetflow train <args>`` on ``num_nodes`` × ``gpus_per_node`` GPUs.

    Its pods (the runtime's trainer Job ``node``) are set through one ``spec.runtimePatches`` entry
    (manager :data:`PATCH_MANAGER`), always present: labels ``isnetflow.io/training-pod: "true"`` and
    ``isnetflow.io/trainjob: <name>`` (plus ``app.kubernetes.io/part-of: isnetflow``,
    ``app.kubernetes.io/component: training`` and ``pod_labels``), the pod security context of the
    project image's user (``runAsNonRoot``, uid/gid/fsGroup 10001, seccomp ``RuntimeDefault``), and for
    the container ``node`` no privilege escalation, all capabilities dropped, a read-only root filesystem
    and emptyDir volumes at ``/tmp`` and ``/home/isnetflow`` (so ``--out``, and any local
    ``--checkpoint-dir``, must lie under ``/tmp``).

    What the caller must pass so that the pods work in the namespace of k8s/:

    * ``pod_labels={"isnetflow.io/mlflow-client": "true"}``
      (:data:`~isnetflow.cluster.names.MLFLOW_CLIENT_LABEL`) when the training logs to the MLflow server
      of k8s/ (its NetworkPolicy admits only pods so labelled, Argo workflow pods and the kubeflow
      namespace; the TrainJob's pods are none of the latter);
    * ``"isnetflow.io/s3-client": "true"`` (:data:`~isnetflow.cluster.names.S3_CLIENT_LABEL`) as well
      when the training reads or writes ``s3://`` (data, masks, checkpoints) and the object store is the
      dev overlay's MinIO (its NetworkPolicy admits only pods so labelled, MLflow and Argo workflow pods);
    * ``service_account="isnetflow-workload"`` (:data:`~isnetflow.cluster.names.WORKLOAD_ACCOUNT`): a
      runtime patch cannot set ``automountServiceAccountToken``, and that account disables it (the pods
      never call the API); left out, the pods run as the namespace's ``default`` account, with its token
      mounted;
    * ``node_selector`` / ``tolerations`` of the GPU nodes (``{"nvidia.com/gpu.present": "true"}``,
      ``[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]``).

    Args:
        name: the TrainJob's name, a DNS-1035 label; short enough that JobSet's pod names
            (``<name>-node-0-<node index>-xxxxx``) fit in 63 characters (48 for up to 10 nodes). Make it
            deterministic per pipeline task, so that a retry adopts the job (:func:`submit_and_wait`).
        namespace: where the TrainJob (and its pods) run.
        image: the project image (it has ``torchrun`` and ``isnetflow`` on its PATH).
        args: the options of ``isnetflow train`` (``["--data", ..., "--epochs", "20"]``), without
            ``train`` itself, which :data:`COMMAND` ends with.
        num_nodes: ``spec.trainer.numNodes``: pods, one per node (torchrun's ``--nnodes``).
        gpus_per_node: ``spec.trainer.numProcPerNode`` (torchrun's ``--nproc-per-node``, one worker
            process per GPU) and the ``nvidia.com/gpu`` limit of each pod.
        runtime: the ``ClusterTrainingRuntime`` with the Torch ML policy to run on.
        env: environment variables (plain values) of the trainer container.
        env_from_secrets: environment variables read from Secrets: ``{VAR: (secret name, key)}`` (one
            key each, never a whole Secret).
        labels: labels of the TrainJob, over ``app.kubernetes.io/part-of: isnetflow`` and
            ``app.kubernetes.io/component: training`` (part-of cannot be changed).
        resources_per_node: ``{"requests": {...}, "limits": {...}}`` of each pod (cpu, memory, ...); the
            GPU limit is added from ``gpus_per_node``.
        pod_labels: labels of the pods, over ``app.kubernetes.io/part-of`` / ``component`` (as ``labels``)
            and under the two training-pod labels above, which cannot be given other values; the
            controllers' prefixes (``jobset.sigs.k8s.io``, ``batch.kubernetes.io``,
            ``trainer.kubeflow.org``) are refused.
        service_account: the pods' ServiceAccount (``spec.serviceAccountName``); None: the runtime's.
        node_selector: the pods' ``spec.nodeSelector`` (label keys and values).
        tolerations: the pods' ``spec.tolerations``, core/v1 Tolerations (``key``, ``operator`` ``Equal``
            or ``Exists``, ``value``, ``effect``, ``tolerationSeconds``) checked as the API server does.

    Raises:
        ValueError: an argument the API server, the Trainer's webhooks or JobSet would refuse, or a
            reserved variable (``PET_*``, set by the Trainer), naming the argument.
    """
    num_nodes = _check_int("num_nodes", num_nodes, 1)
    gpus_per_node = _check_int("gpus_per_node", gpus_per_node, 1)
    name = _check_name(name, num_nodes)
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        raise ValueError(f"namespace {namespace!r} is not a DNS-1123 label (at most 63 characters)")
    if not isinstance(runtime, str) or len(runtime) > 253 or not _DNS1123_SUBDOMAIN.match(runtime):
        raise ValueError(f"runtime {runtime!r} is not a valid ClusterTrainingRuntime name")
    if (
        not isinstance(image, str)
        or not image
        or len(image) > MAX_IMAGE_LENGTH
        or any(c.isspace() for c in image)
    ):
        raise ValueError(
            f"image {image!r}: expected an image reference of 1 to {MAX_IMAGE_LENGTH} characters"
        )
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
        raise ValueError(f"args must be a list of str (the options of isnetflow train), got {args!r}")
    args = list(args)
    if len(args) > MAX_ITEMS:
        raise ValueError(f"{len(args)} args: the TrainJob takes at most {MAX_ITEMS}")
    if args[:1] == ["train"]:
        raise ValueError("args are the options of `isnetflow train`: leave out 'train' (the command has it)")
    trainer: dict[str, Any] = {
        "image": image,
        "command": list(COMMAND),
        "args": args,
        "numNodes": num_nodes,
        "numProcPerNode": gpus_per_node,
        "resourcesPerNode": _resources(resources_per_node, gpus_per_node),
    }
    env_list = _env(env, env_from_secrets)
    if env_list:
        trainer["env"] = env_list
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": _check_labels(labels)},
        "spec": {
            "runtimeRef": {"name": runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": trainer,
            "runtimePatches": [_runtime_patch(name, pod_labels, service_account, node_selector, tolerations)],
        },
    }


def trainjob_name(pipeline_run: str, mode: str) -> str:
    """The TrainJob name of the training of ``mode`` in pipeline run ``pipeline_run``:
    ``isnetflow-<mode>-<first 10 hex digits of sha256(pipeline_run)>``.

    Deterministic, so that a retried task re-submits the same name and adopts its job
    (:func:`submit_and_wait`); a DNS-1035 label of at most 29 characters, well within the 48 that JobSet's
    pod names leave for up to 10 nodes (47 up to 100). Two runs share a name with probability 2**-40.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    if not isinstance(pipeline_run, str) or not pipeline_run:
        raise ValueError(
            f"pipeline_run must be a non-empty str (the pipeline run's id), got {pipeline_run!r}"
        )
    return f"isnetflow-{mode}-{hashlib.sha256(pipeline_run.encode()).hexdigest()[:10]}"


# -- the API -----------------------------------------------------------------------------------------------


def load_api_client(kubeconfig: str | PathLike[str] | None = None) -> client.ApiClient:
    """A Kubernetes API client: the pod's service account when running in a cluster (and no
    ``kubeconfig`` is given), else the kubeconfig (``kubeconfig``, or ``$KUBECONFIG`` /
    ``~/.kube/config``, its current context)."""
    configuration = client.Configuration()
    if kubeconfig is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            pass
        else:
            return client.ApiClient(configuration)
    config.load_kube_config(
        config_file=None if kubeconfig is None else str(kubeconfig), client_configuration=configuration
    )
    return client.ApiClient(configuration)


def _true_condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def _finished(obj: dict[str, Any], namespace: str, name: str) -> bool:
    """True once ``Complete``; raises :class:`TrainJobFailed` once ``Failed``; else False."""
    failed = _true_condition(obj, CONDITION_FAILED)
    if failed is not None:
        raise TrainJobFailed(namespace, name, failed.get("reason", ""), failed.get("message", ""), obj)
    return _true_condition(obj, CONDITION_COMPLETE) is not None


def _conditions(obj: Mapping[str, Any]) -> str:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return (
        ", ".join(f"{c.get('type')}={c.get('status')} ({c.get('reason', '')})" for c in conditions) or "none"
    )


def _deleted(namespace: str, name: str, obj: dict[str, Any] | None) -> TrainJobFailed:
    return TrainJobFailed(namespace, name, "Deleted", "the TrainJob was deleted before it finished", obj)


def _get(api: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    try:
        obj: dict[str, Any] = api.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as exc:
        if exc.status == 404:
            raise _deleted(namespace, name, None) from exc
        raise
    return obj


def _same_training(submitted: Mapping[str, Any], existing: Mapping[str, Any]) -> None:
    mine, theirs = submitted.get("spec") or {}, existing.get("spec") or {}
    ours = ((mine.get("runtimeRef") or {}).get("name"), mine.get("trainer"))
    found = ((theirs.get("runtimeRef") or {}).get("name"), theirs.get("trainer"))
    if ours != found:
        meta = existing.get("metadata") or {}
        raise TrainJobConflict(
            f"TrainJob {meta.get('namespace')}/{meta.get('name')} already exists with another runtime or "
            f"trainer spec: not adopting it (submitted {ours!r}, found {found!r})"
        )


def submit_and_wait(
    manifest: Mapping[str, Any],
    *,
    api_client: client.ApiClient | None = None,
    timeout_s: float = 7 * 24 * 3600.0,
    on_event: EventCallback | None = None,
    watch_window_s: float = WATCH_WINDOW_S,
) -> dict[str, Any]:
    """Create the TrainJob ``manifest`` and wait until it has finished; the final object.

    The job is watched (``watch=true``, ``fieldSelector=metadata.name=<name>``, from the resourceVersion
    of the object last read) in windows of ``watch_window_s``; when a watch ends without a verdict (its
    window, a closed connection, or 410 Gone once its resourceVersion has expired) the job is read again
    and watched from the version read. A 409 AlreadyExists on create adopts the existing job (module
    docstring). ``on_event(kind, obj)`` is called with ``"CREATED"`` or ``"ADOPTED"``, each watch event
    (``"ADDED"``, ``"MODIFIED"``) and ``"RESYNCED"`` for each re-read.

    Raises:
        TrainJobFailed: its ``Failed`` condition became true (or it was deleted).
        TrainJobConflict: a different TrainJob of that name exists.
        TimeoutError: it had not finished after ``timeout_s`` seconds (it is left running).
        kubernetes.client.ApiException: any other refusal of the API server (403: the service account
            lacks the rights of k8s/base/rbac.yaml; 404 on create: the Trainer's CRDs are missing).
    """
    meta = manifest.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND or not namespace or not name:
        raise ValueError(
            f"not a {API_VERSION} {KIND} with metadata.name and metadata.namespace (use trainjob_manifest)"
        )
    if timeout_s <= 0 or watch_window_s <= 0:
        raise ValueError("timeout_s and watch_window_s must be positive")
    if api_client is not None:
        return _submit_and_wait(manifest, namespace, name, api_client, timeout_s, on_event, watch_window_s)
    with load_api_client() as own_client:
        return _submit_and_wait(manifest, namespace, name, own_client, timeout_s, on_event, watch_window_s)


def _submit_and_wait(
    manifest: Mapping[str, Any],
    namespace: str,
    name: str,
    api_client: client.ApiClient,
    timeout_s: float,
    on_event: EventCallback | None,
    watch_window_s: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    api = client.CustomObjectsApi(api_client)

    def notify(kind: str, obj: dict[str, Any]) -> None:
        log.info("TrainJob %s/%s %s: conditions %s", namespace, name, kind, _conditions(obj))
        if on_event is not None:
            on_event(kind, obj)

    try:
        obj: dict[str, Any] = api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, dict(manifest), _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
        obj = _get(api, namespace, name)
        _same_training(manifest, obj)
        notify("ADOPTED", obj)
    else:
        notify("CREATED", obj)

    while not _finished(obj, namespace, name):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"TrainJob {namespace}/{name} did not finish within {timeout_s:g} s (conditions: "
                f"{_conditions(obj)}); it was left running"
            )
        window = max(1, math.ceil(min(remaining, watch_window_s)))
        stream = watch.Watch().stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            resource_version=obj["metadata"]["resourceVersion"],
            timeout_seconds=window,
            _request_timeout=(REQUEST_TIMEOUT_S, window + _WATCH_READ_GRACE_S),
        )
        try:
            with contextlib.closing(stream) as events:
                for event in events:
                    if event["type"] == "DELETED":
                        raise _deleted(namespace, name, event["raw_object"])
                    if event["type"] not in ("ADDED", "MODIFIED"):
                        continue
                    obj = event["raw_object"]
                    notify(event["type"], obj)
                    if _finished(obj, namespace, name) or time.monotonic() >= deadline:
                        break
        except ApiException as exc:
            if exc.status != 410:
                raise
            log.info("TrainJob %s/%s: watch expired (410 Gone), reading it again", namespace, name)
        except urllib3.exceptions.HTTPError as exc:  # read timeout, connection broken mid-stream
            log.info("TrainJob %s/%s: watch interrupted (%s), reading it again", namespace, name, exc)
        if _finished(obj, namespace, name):
            break
        obj = _get(api, namespace, name)
        notify("RESYNCED", obj)
    return obj
