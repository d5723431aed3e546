"""The Kubeflow Trainer TrainJob that ``isnetflow.cluster.trainjob`` submits, checked offline.

Against the vendored TrainJob CRD schema (strict, as the API server's field validation), against the
runtime it runs on (the vendored ``torch-distributed`` ClusterTrainingRuntime of the same Trainer
release), and through torchrun's own argument parser fed the variables the Trainer's Torch plugin sets:
so the topology written in ``numNodes`` / ``numProcPerNode`` is the one torchrun launches.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from isnetflow import __version__
from isnetflow.cluster.names import TRAINING_POD_LABEL, TRAINJOB_LABEL
from isnetflow.cluster.trainjob import (
    API_VERSION,
    COMMAND,
    GROUP,
    IMAGE_HOME,
    KIND,
    MODES,
    PATCH_MANAGER,
    PLURAL,
    RESERVED_ENV,
    RUN_AS_GROUP,
    RUN_AS_USER,
    TRAINER_JOB,
    trainjob_manifest,
    trainjob_name,
)
from tests.deploy.manifests import NAMESPACE, REPO, SCHEMAS, Manifest, crd_errors, hardening_problems, one

IMAGE = f"ghcr.io/isnetflow/isnetflow:{__version__}"
ARGS = ["--data", "/mnt/data/validated", "--epochs", "20", "--experiment", "cxr"]
#: what the Trainer's Torch plugin (kubeflow/trainer v2.3.0, pkg/runtime/framework/plugins/torch) names the
#: master: node 0's pod (<trainjob>-node-0-0) under the JobSet's headless service (<trainjob>), port 29500
MASTER_PORT = "29500"


def full(**overrides: Any) -> Manifest:
    """2 nodes × 4 GPUs with every optional part set."""
    kwargs: dict[str, Any] = {
        "namespace": NAMESPACE,
        "image": IMAGE,
        "args": ARGS,
        "num_nodes": 2,
        "gpus_per_node": 4,
        "env": {"ISNETFLOW_LOG_LEVEL": "INFO", "MLFLOW_TRACKING_URI": "http://mlflow.isnetflow.svc:5000"},
        "env_from_secrets": {
            "MLFLOW_TRACKING_USERNAME": ("isnetflow-mlflow-credentials", "MLFLOW_TRACKING_USERNAME"),
            "MLFLOW_TRACKING_PASSWORD": ("isnetflow-mlflow-credentials", "MLFLOW_TRACKING_PASSWORD"),
        },
        "labels": {"isnetflow.io/pipeline-run": "run-0123"},
        "resources_per_node": {"requests": {"cpu": "16", "memory": "64Gi"}, "limits": {"memory": "64Gi"}},
        "pod_labels": {"isnetflow.io/mlflow-client": "true", "isnetflow.io/s3-client": "true"},
        "service_account": "isnetflow-workload",
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    kwargs.update(overrides)
    return trainjob_manifest("cxr-train-7f3a9c", **kwargs)


#: where the pod template patch of the trainer Job is in a TrainJob
PATCH = ("spec", "runtimePatches", 0, "trainingRuntimeSpec", "template", "spec", "replicatedJobs", 0)
POD_PATCH = (*PATCH, "template", "spec", "template")


def at(doc: Manifest, path: tuple[str | int, ...]) -> Any:
    node: Any = doc
    for key in path:
        node = node[key]
    return node


@pytest.fixture(scope="module")
def runtime() -> Manifest:
    return yaml.safe_load((SCHEMAS / "clustertrainingruntime-torch-distributed.yaml").read_text())


def test_the_manifest(runtime: Manifest) -> None:
    doc = full()
    assert doc["apiVersion"] == API_VERSION == "trainer.kubeflow.org/v1alpha1" and doc["kind"] == KIND
    assert doc["metadata"] == {
        "name": "cxr-train-7f3a9c",
        "namespace": NAMESPACE,
        "labels": {
            "app.kubernetes.io/part-of": "isnetflow",
            "app.kubernetes.io/component": "training",
            "isnetflow.io/pipeline-run": "run-0123",
        },
    }
    assert doc["spec"]["runtimeRef"] == {
        "name": runtime["metadata"]["name"],
        "apiGroup": "trainer.kubeflow.org",
        "kind": runtime["kind"],
    }
    trainer = doc["spec"]["trainer"]
    assert trainer["image"] == IMAGE
    assert trainer["command"] == ["torchrun", "--module", "isnetflow.cli", "train"] == list(COMMAND)
    assert trainer["args"] == ARGS
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "16", "memory": "64Gi"},
        "limits": {"memory": "64Gi", "nvidia.com/gpu": "4"},
    }
    assert trainer["env"][:2] == [
        {"name": "ISNETFLOW_LOG_LEVEL", "value": "INFO"},
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.isnetflow.svc:5000"},
    ]
    assert trainer["env"][3] == {
        "name": "MLFLOW_TRACKING_PASSWORD",
        "valueFrom": {
            "secretKeyRef": {"name": "isnetflow-mlflow-credentials", "key": "MLFLOW_TRACKING_PASSWORD"}
        },
    }


def test_the_smallest_manifest() -> None:
    doc = trainjob_manifest("cxr", namespace=NAMESPACE, image=IMAGE, args=[])
    trainer = doc["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"], trainer["args"]) == (1, 1, [])
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert "env" not in trainer
    assert crd_errors(doc) == []
    # the hardening and the training-pod labels are there without being asked for
    (patch,) = doc["spec"]["runtimePatches"]
    assert patch["manager"] == PATCH_MANAGER
    pod = at(doc, POD_PATCH)
    assert pod["metadata"] == {
        "labels": {
            "app.kubernetes.io/part-of": "isnetflow",
            "app.kubernetes.io/component": "training",
            TRAINING_POD_LABEL: "true",
            TRAINJOB_LABEL: "cxr",
        }
    }
    assert set(pod["spec"]) == {"securityContext", "volumes", "containers"}


def test_the_manifest_validates_against_the_vendored_crd() -> None:
    assert crd_errors(full()) == []


def test_the_runtime_patch() -> None:
    """One patch, of the trainer Job ``node``: its pods' labels, account, placement and hardening."""
    doc = full()
    (patch,) = doc["spec"]["runtimePatches"]
    assert patch["manager"] == "isnetflow.io/pipeline"
    # the Trainer's webhook: a domain-prefixed path (validation.IsDomainPrefixedPath)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-a-zA-Z0-9/._~]+", patch["manager"])
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == TRAINER_JOB == "node" and set(job) == {"name", "template"}
    template = at(doc, POD_PATCH)
    assert template["metadata"]["labels"] == {
        "app.kubernetes.io/part-of": "isnetflow",
        "app.kubernetes.io/component": "training",
        "isnetflow.io/mlflow-client": "true",
        "isnetflow.io/s3-client": "true",
        "isnetflow.io/training-pod": "true",
        "isnetflow.io/trainjob": "cxr-train-7f3a9c",
    }
    assert template["spec"] == {
        "serviceAccountName": "isnetflow-workload",
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [{"name": "isnetflow-tmp", "emptyDir": {}}, {"name": "isnetflow-home", "emptyDir": {}}],
        "containers": [
            {
                "name": "node",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "isnetflow-tmp", "mountPath": "/tmp"},
                    {"name": "isnetflow-home", "mountPath": "/home/isnetflow"},
                ],
            }
        ],
    }
    # the launcher's adoption check is unaffected: the patch is not part of spec.trainer
    assert "runtimePatches" not in doc["spec"]["trainer"]


def test_the_patch_runs_as_the_image_user() -> None:
    """The uid/gid and $HOME of the patch are the Dockerfile's (useradd, USER, ENV HOME)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(rf"groupadd --system --gid {RUN_AS_GROUP} isnetflow\b", final_stage)
    assert re.search(
        rf"useradd --system --uid {RUN_AS_USER} --gid isnetflow\b.*--home-dir {IMAGE_HOME}\b", final_stage
    )
    assert re.search(rf"^USER {RUN_AS_USER}:{RUN_AS_GROUP}$", final_stage, re.M)
    assert re.search(rf"\bHOME={IMAGE_HOME}\b", final_stage)
    assert RUN_AS_USER >= 10000  # tests/deploy/manifests.py hardening_problems: runAsUser >= 10000


def merged(base: Any, patch: Any) -> Any:
    """A strategic merge patch as far as the Trainer's (k8s.io/apimachinery strategicpatch against the
    JobSet types) applies to these fields: maps merge, lists of named items merge by name (replicatedJobs,
    containers, volumes), volumeMounts by mountPath, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return base | {k: merged(base[k], v) if k in base else v for k, v in patch.items()}
    if isinstance(base, list) and isinstance(patch, list) and patch and isinstance(patch[0], dict):
        key = next((k for k in ("name", "mountPath") if k in patch[0]), None)
        if key is not None:
            out = {item[key]: item for item in base}
            for item in patch:
                out[item[key]] = merged(out[item[key]], item) if item[key] in out else item
            return list(out.values())
    return patch


def trainer_pod(doc: Manifest, runtime: Manifest) -> Manifest:
    """The pod template of the trainer Job the Trainer builds: the runtime's, the TrainJob's patch merged
    in, then the trainer container given the TrainJob's image, command, args and resources."""
    spec = merged(
        runtime["spec"]["template"]["spec"],
        doc["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"],
    )
    (job,) = [j for j in spec["replicatedJobs"] if j["name"] == TRAINER_JOB]
    template = copy.deepcopy(job["template"]["spec"]["template"])
    trainer = doc["spec"]["trainer"]
    for container in template["spec"]["containers"]:
        if container["name"] == TRAINER_JOB:
            container |= {k: trainer[k] for k in ("image", "command", "args", "env") if k in trainer}
            container["resources"] = trainer["resourcesPerNode"]
    return {
        "kind": "Job",
        "metadata": {"name": f"{doc['metadata']['name']}-{TRAINER_JOB}"},
        "spec": {"template": template},
    }


def test_the_trainer_pods_are_hardened(runtime: Manifest) -> None:
    """The pods the Trainer builds from the runtime and the patch pass the checks every workload of k8s/
    passes (and Pod Security "restricted", which the namespace warns about), and write only to emptyDirs."""
    resources = {"requests": {"cpu": "16", "memory": "64Gi"}, "limits": {"cpu": "16", "memory": "64Gi"}}
    pod = trainer_pod(full(resources_per_node=resources), runtime)
    assert hardening_problems(pod) == []
    spec = pod["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == IMAGE and container["command"] == list(COMMAND)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert {m["mountPath"]: "emptyDir" in volumes[m["name"]] for m in container["volumeMounts"]} == {
        "/tmp": True,
        IMAGE_HOME: True,
    }
    assert pod["spec"]["template"]["metadata"]["labels"][TRAINING_POD_LABEL] == "true"
    assert spec["serviceAccountName"] == "isnetflow-workload"
    # without cpu/memory limits, only the resource check is left
    assert hardening_problems(trainer_pod(full(), runtime)) == [
        "Job/cxr-train-7f3a9c-node/node: cpu+memory requests and limits"
    ]


def test_the_patch_names_what_the_runtime_has(runtime: Manifest) -> None:
    """The Trainer's webhook refuses a patch of a replicated Job or container the runtime lacks; the
    patch's volumes must not collide with the runtime's."""
    jobs = {j["name"]: j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"]}
    doc = full()
    (job,) = doc["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = jobs[job["name"]]["template"]["spec"]["template"]["spec"]
    patch = job["template"]["spec"]["template"]["spec"]
    assert {c["name"] for c in patch["containers"]} <= {c["name"] for c in pod["containers"]}
    assert not {v["name"] for v in patch["volumes"]} & {v["name"] for v in pod.get("volumes", [])}
    # the webhook refuses env in a patch of the container node (it is the TrainJob's spec.trainer.env)
    assert all("env" not in c for c in patch["containers"])


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        ((*POD_PATCH, "spec"), ("securityContext", "securitycontext")),
        ((*POD_PATCH, "spec"), ("nodeSelector", "nodeSelectors")),
        ((*POD_PATCH, "spec"), ("serviceAccountName", "serviceAccount")),
        ((*POD_PATCH, "spec", "containers", 0), ("volumeMounts", "volumeMount")),
        ((*POD_PATCH, "spec", "containers", 0, "securityContext"), ("capabilities", "capability")),
        ((*POD_PATCH, "spec", "tolerations", 0), ("effect", "effects")),
        (POD_PATCH, ("metadata", "meta")),
        (("spec", "runtimePatches", 0), ("manager", "managers")),
        (("spec", "runtimePatches", 0), ("trainingRuntimeSpec", "runtimeSpec")),
    ],
)
def test_crd_validation_catches_a_misspelled_patch_field(
    path: tuple[str | int, ...], typo: tuple[str, str]
) -> None:
    doc = copy.deepcopy(full())
    node = at(doc, path)
    good, bad = typo
    node[bad] = node.pop(good)
    errors = crd_errors(doc)
    unexpected = [e for e in errors if f"'{bad}' was unexpected" in e]
    assert len(unexpected) == 1 and set(errors) - set(unexpected) <= {
        f"{'.'.join(map(str, path))}: '{good}' is a required property"
    }, errors


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        # a runtime patch may set only some pod and container fields (kubeflow/trainer PodSpecPatch and
        # ContainerPatch): the token mount, the image, the resources are not among them
        ((*POD_PATCH, "spec"), "automountServiceAccountToken", False),
        ((*POD_PATCH, "spec"), "hostNetwork", False),
        ((*POD_PATCH, "spec", "containers", 0), "resources", {"limits": {"cpu": "1"}}),
        ((*POD_PATCH, "spec", "containers", 0), "image", IMAGE),
        ((*POD_PATCH, "spec", "containers", 0), "workingDir", "/tmp"),
    ],
)
def test_fields_a_runtime_patch_cannot_set_are_refused(
    path: tuple[str | int, ...], field: str, value: Any
) -> None:
    doc = copy.deepcopy(full())
    at(doc, path)[field] = value
    assert [e for e in crd_errors(doc) if f"'{field}' was unexpected" in e], crd_errors(doc)


def test_trainjob_name() -> None:
    name = trainjob_name("7f3a9c2e-0b4e-4d1a-9f63-2a1c5e8b7d90", "isnet")
    assert name == trainjob_name("7f3a9c2e-0b4e-4d1a-9f63-2a1c5e8b7d90", "isnet")  # deterministic
    assert re.fullmatch(r"isnetflow-isnet-[0-9a-f]{10}", name)
    names = {trainjob_name(run, mode) for run in ("run-1", "run-2", "7f3a9c2e") for mode in MODES}
    assert len(names) == 6  # differs per run and per mode
    for candidate in names:
        assert len(candidate) <= 29
        # a valid TrainJob name for 10 nodes and more: trainjob_manifest accepts it (DNS-1035, JobSet)
        doc = trainjob_manifest(candidate, namespace=NAMESPACE, image=IMAGE, args=[], num_nodes=100)
        assert doc["metadata"]["name"] == candidate
        assert at(doc, POD_PATCH)["metadata"]["labels"][TRAINJOB_LABEL] == candidate
    with pytest.raises(ValueError, match="mode 'masked'"):
        trainjob_name("run-1", "masked")
    with pytest.raises(ValueError, match="pipeline_run"):
        trainjob_name("", "isnet")


def test_modes_are_the_configs() -> None:
    from isnetflow.config import TrainConfig

    assert typing.get_args(TrainConfig.model_fields["mode"].annotation) == MODES


@pytest.mark.parametrize(
    ("path", "typo"),
    [
        (("spec", "trainer"), ("numProcPerNode", "numProcsPerNode")),
        (("spec", "trainer"), ("resourcesPerNode", "resources")),
        (("spec",), ("runtimeRef", "runtime")),
        (("spec", "runtimeRef"), ("apiGroup", "apigroup")),
        (("spec", "trainer", "resourcesPerNode"), ("limits", "limit")),
        (("spec", "trainer", "env", 3, "valueFrom"), ("secretKeyRef", "secretRef")),
    ],
)
def test_crd_validation_catches_a_misspelled_field(
    path: tuple[str | int, ...], typo: tuple[str, str]
) -> None:
    """The check above is live: one misspelled field, one error naming it."""
    doc = copy.deepcopy(full())
    node: Any = doc
    for key in path:
        node = node[key]
    good, bad = typo
    node[bad] = node.pop(good)
    errors = crd_errors(doc)
    unexpected = [e for e in errors if f"'{bad}' was unexpected" in e]
    # plus, for a required field, its absence
    assert len(unexpected) == 1 and set(errors) - set(unexpected) <= {
        f"{'.'.join(map(str, path))}: '{good}' is a required property"
    }, errors


def test_a_wrong_type_is_caught() -> None:
    doc = copy.deepcopy(full())
    doc["spec"]["trainer"]["numNodes"] = "2"
    assert any("numNodes: '2' is not of type 'integer'" in e for e in crd_errors(doc))
    doc = copy.deepcopy(full())
    doc["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] = "four"
    assert any("nvidia.com/gpu: 'four' does not match" in e for e in crd_errors(doc))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Cxr-train"}, "not a DNS-1035 label"),
        ({"name": "1cxr"}, "not a DNS-1035 label"),
        ({"name": "cxr-"}, "not a DNS-1035 label"),
        ({"name": "cxr_train"}, "not a DNS-1035 label"),
        ({"name": ""}, "not a DNS-1035 label"),
        ({"name": "c" * 64}, "has 64 characters"),
        ({"name": "c" * 49}, "may have at most 48"),
        ({"name": "c" * 48, "num_nodes": 11}, "may have at most 47"),
        ({"namespace": "Isnetflow"}, "namespace"),
        ({"namespace": "n" * 64}, "namespace"),
        ({"runtime": "Torch"}, "runtime"),
        ({"image": ""}, "image"),
        ({"image": "ghcr.io/x y"}, "image"),
        ({"image": "i" * 501}, "image"),
        ({"args": "--data /d"}, "list of str"),
        ({"args": ["--epochs", 20]}, "list of str"),
        ({"args": ["train", "--data", "/d"]}, "leave out 'train'"),
        ({"args": ["-x"] * 129}, "at most 128"),
        ({"num_nodes": 0}, "num_nodes must be an integer from 1"),
        ({"num_nodes": True}, "num_nodes"),
        ({"num_nodes": 2.0}, "num_nodes"),
        ({"gpus_per_node": 0}, "gpus_per_node must be an integer from 1"),
        ({"gpus_per_node": 2**31}, "gpus_per_node"),
        ({"env": {"PET_NNODES": "4"}}, "set by the Trainer's Torch plugin"),
        ({"env": {"1X": "y"}}, "environment variable name"),
        ({"env": {"A=B": "y"}}, "environment variable name"),
        ({"env": {"X": 1}}, "value must be a str"),
        ({"env": {f"V{i}": "x" for i in range(129)}}, "at most 128"),
        ({"env_from_secrets": {"PET_MASTER_ADDR": ("s", "k")}}, "set by the Trainer's Torch plugin"),
        ({"env_from_secrets": {"X": ("Bad_Secret", "k")}}, "not a valid Secret name"),
        ({"env_from_secrets": {"X": ("s", "a/b")}}, "not a valid Secret key"),
        ({"env_from_secrets": {"X": "s"}}, "expected (secret name, key)"),
        ({"env": {"X": "1"}, "env_from_secrets": {"X": ("s", "k")}}, "both as a value and from a Secret"),
        ({"labels": {"app.kubernetes.io/part-of": "other"}}, "on every isnetflow resource"),
        ({"labels": {"bad key": "v"}}, "label key"),
        ({"labels": {"/x": "v"}}, "label key"),
        ({"labels": {"Example.com/x": "v"}}, "label key"),
        ({"labels": {"x": "bad value"}}, "label value"),
        ({"labels": {"x": "v" * 64}}, "label value"),
        ({"resources_per_node": {"limit": {"cpu": "1"}}}, "'requests' and 'limits'"),
        ({"resources_per_node": {"limits": {"nvidia.com/gpu": "8"}}}, "give the GPU count once"),
        ({"resources_per_node": {"requests": {"cpu": 1.5}}}, "is not a quantity"),
        ({"pod_labels": {"bad key": "v"}}, "pod label 'bad key': not a valid Kubernetes label key"),
        ({"pod_labels": {"isnetflow.io/mlflow-client": True}}, "label key (or its value is not a str)"),
        ({"pod_labels": {"isnetflow.io/mlflow-client": "yes please"}}, "not a valid Kubernetes label value"),
        ({"pod_labels": {"x": "v" * 64}}, "not a valid Kubernetes label value"),
        ({"pod_labels": {"app.kubernetes.io/part-of": "other"}}, "on every isnetflow resource"),
        ({"pod_labels": {"isnetflow.io/training-pod": "false"}}, "NetworkPolicy training-pods"),
        ({"pod_labels": {"isnetflow.io/trainjob": "other"}}, "NetworkPolicy training-pods"),
        ({"pod_labels": {"jobset.sigs.k8s.io/jobset-name": "x"}}, "set by the JobSet, Job and Trainer"),
        ({"pod_labels": ["isnetflow.io/mlflow-client"]}, "pod labels must be a mapping"),
        ({"service_account": "Isnetflow_Workload"}, "not a valid ServiceAccount name"),
        ({"service_account": ""}, "not a valid ServiceAccount name"),
        ({"node_selector": {"nvidia.com/gpu.present": "yes it is"}}, "node selector"),
        ({"node_selector": {"-bad": "true"}}, "node selector '-bad'"),
        ({"tolerations": {"key": "nvidia.com/gpu"}}, "tolerations must be a list"),
        ({"tolerations": ["nvidia.com/gpu"]}, "tolerations[0]: expected a mapping"),
        (
            {"tolerations": [{"key": "nvidia.com/gpu", "effects": "NoSchedule"}]},
            "unknown field(s) ['effects']",
        ),
        ({"tolerations": [{"key": "nvidia.com/gpu", "operator": "In"}]}, "expected 'Equal' or 'Exists'"),
        ({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "value": "x"}]}, "takes no value"),
        ({"tolerations": [{"operator": "Equal", "value": "x"}]}, "needs operator 'Exists'"),
        ({"tolerations": [{"key": "bad key", "operator": "Exists"}]}, "not a valid taint key"),
        ({"tolerations": [{"key": "gpu", "value": "a b"}]}, "not a valid taint value"),
        ({"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoRun"}]}, "effect 'NoRun'"),
        (
            {
                "tolerations": [
                    {"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}
                ]
            },
            "tolerationSeconds needs effect 'NoExecute'",
        ),
        (
            {
                "tolerations": [
                    {"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": "60"}
                ]
            },
            "tolerationSeconds must be an integer",
        ),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {"name": "cxr-train", "namespace": NAMESPACE, "image": IMAGE, "args": ARGS}
    call.update(kwargs)
    with pytest.raises(ValueError) as info:
        trainjob_manifest(call.pop("name"), **call)
    assert message in str(info.value)


def test_the_name_length_follows_jobset_pod_names() -> None:
    """JobSet refuses a JobSet whose longest pod name ``<name>-node-0-<n-1>-xxxxx`` exceeds 63."""
    for nodes, longest in ((1, 48), (10, 48), (11, 47), (100, 47), (101, 46)):
        doc = trainjob_manifest("c" * longest, namespace=NAMESPACE, image=IMAGE, args=[], num_nodes=nodes)
        assert len(f"{doc['metadata']['name']}-{TRAINER_JOB}-0-{nodes - 1}-abcde") == 63
        with pytest.raises(ValueError, match="JobSet names the pods"):
            trainjob_manifest("c" * (longest + 1), namespace=NAMESPACE, image=IMAGE, args=[], num_nodes=nodes)


def test_gpus_given_twice_but_equal_are_accepted() -> None:
    doc = full(resources_per_node={"requests": {"nvidia.com/gpu": 4}, "limits": {"nvidia.com/gpu": "4"}})
    assert doc["spec"]["trainer"]["resourcesPerNode"] == {
        "requests": {"nvidia.com/gpu": 4},
        "limits": {"nvidia.com/gpu": "4"},
    }
    assert crd_errors(doc) == []


def test_the_runtime_runs_our_command_under_its_torch_policy(runtime: Manifest) -> None:
    """The ClusterTrainingRuntime has the Torch ML policy (the PET_* variables) and a trainer Job named
    ``node`` whose container ``node`` has no command of its own: the TrainJob's command, image, args and
    env replace that container's (the Trainer's JobSet builder does so for the container named ``node``
    of the Job labelled ``trainjob-ancestor-step: trainer``)."""
    assert runtime["spec"]["mlPolicy"]["torch"] == {}
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    trainer_jobs = [
        j
        for j in jobs
        if j["template"]["metadata"]["labels"].get("trainer.kubeflow.org/trainjob-ancestor-step") == "trainer"
    ]
    assert [j["name"] for j in trainer_jobs] == [TRAINER_JOB]
    (container,) = trainer_jobs[0]["template"]["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "node"
    assert "command" not in container and "args" not in container


def plugin_env(doc: Manifest, node_rank: int) -> dict[str, str]:
    """The variables the Torch plugin sets on node ``node_rank``'s trainer container (PET_NODE_RANK comes
    from the Job completion index, i.e. the pod's index among the TrainJob's nodes)."""
    trainer, name = doc["spec"]["trainer"], doc["metadata"]["name"]
    return {
        "PET_NNODES": str(trainer["numNodes"]),
        "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
        "PET_NODE_RANK": str(node_rank),
        "PET_MASTER_ADDR": f"{name}-{TRAINER_JOB}-0-0.{name}",
        "PET_MASTER_PORT": MASTER_PORT,
    }


@pytest.mark.parametrize("node_rank", [0, 1])
def test_torchrun_reads_the_topology_from_the_plugin_variables(
    node_rank: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch.distributed.run import get_args_parser

    doc = full()
    trainer = doc["spec"]["trainer"]
    assert set(plugin_env(doc, 0)) == RESERVED_ENV
    for key, value in plugin_env(doc, node_rank).items():
        monkeypatch.setenv(key, value)
    command = trainer["command"] + trainer["args"]
    assert command[0] == "torchrun"
    args = get_args_parser().parse_args(command[1:])
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "4", node_rank)
    assert (args.master_addr, args.master_port) == ("cxr-train-7f3a9c-node-0-0.cxr-train-7f3a9c", 29500)
    assert args.rdzv_backend == "static"
    assert args.module and args.training_script == "isnetflow.cli"
    assert args.training_script_args == ["train", *ARGS]


def test_isnetflow_cli_runs_as_a_module(tmp_path: Path) -> None:
    """torchrun --module isnetflow.cli runs ``python -m isnetflow.cli`` in each worker."""
    out = subprocess.run(
        [sys.executable, "-m", "isnetflow.cli", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "--data" in out.stdout and "--epochs" in out.stdout


def test_the_pipeline_runner_may_create_get_and_watch_trainjobs(rendered: dict[str, list[Manifest]]) -> None:
    """Exactly what submit_and_wait uses (tests/integration/test_trainjob_launcher.py records its
    requests): POST (create), GET by name (get), GET ?watch=true&fieldSelector=metadata.name (watch)."""
    for overlay in ("dev", "production"):
        role = one(rendered[overlay], "Role", "isnetflow-pipeline-runner")
        rules = [r for r in role["rules"] if GROUP in r["apiGroups"]]
        assert rules == [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["create", "get", "watch"]}]
