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

The service account of the task needs, in its namespace, ``create``, ``get`` and ``watch`` on
``trainjobs.trainer.kubeflow.org`` (``k8s/base/rbac.yaml``; the field-selected watch is authorized as
``watch`` alone, so no ``list``). This module does not import kfp.
"""

from __future__ import annotations

import contextlib
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

__all__ = [
    "API_VERSION",
    "COMMAND",
    "CONDITION_COMPLETE",
    "CONDITION_FAILED",
    "CONDITION_SUSPENDED",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "TrainJobConflict",
    "TrainJobFailed",
    "load_api_client",
    "submit_and_wait",
    "trainjob_manifest",
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
DEFAULT_LABELS = {"app.kubernetes.io/part-of": "isnetflow", "app.kubernetes.io/component": "training"}
GPU_RESOURCE = "nvidia.com/gpu"
#: torchrun's variables, set by the Torch plugin; the Trainer's webhook refuses a TrainJob that sets them
RESERVED_ENV = frozenset(
    {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
)
#: the trainer's replicated Job in the built-in runtimes ("node"): JobSet names its pods
#: ``<name>-node-<job index>-<completion index>-<5 random>``, and refuses a JobSet whose longest pod name
#: would not be a DNS-1035 label, which bounds the TrainJob's name further than 63 characters
TRAINER_JOB = "node"
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


def _check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(DEFAULT_LABELS)
    for key, value in (labels or {}).items():
        prefix, slash, label = key.rpartition("/") if isinstance(key, str) else ("", "", "")
        if (
            not isinstance(value, str)
            or not (len(label) <= 63 and _LABEL_NAME.match(label))
            or (slash and not (len(prefix) <= 253 and _DNS1123_SUBDOMAIN.match(prefix)))
        ):
            raise ValueError(f"label {key!r}: not a valid Kubernetes label key (or its value is not a str)")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ValueError(f"label {key}={value!r}: not a valid Kubernetes label value")
        if key == "app.kubernetes.io/part-of" and value != DEFAULT_LABELS[key]:
            raise ValueError(f"label {key} is {DEFAULT_LABELS[key]!r} on every isnetflow resource")
        out[key] = value
    return out


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
) -> dict[str, Any]:
    """The TrainJob that runs ``isnetflow train <args>`` on ``num_nodes`` × ``gpus_per_node`` GPUs.

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
        },
    }


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
