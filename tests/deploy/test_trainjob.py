"""The Kubeflow Trainer TrainJob that ``isnetflow.training.trainjob`` submits, checked offline.

Against the vendored TrainJob CRD schema (strict, as the API server's field validation), against the
runtime it runs on (the vendored ``torch-distributed`` ClusterTrainingRuntime of the same Trainer
release), and through torchrun's own argument parser fed the variables the Trainer's Torch plugin sets:
so the topology written in ``numNodes`` / ``numProcPerNode`` is the one torchrun launches.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifests import NAMESPACE, SCHEMAS, Manifest, crd_errors, one

from isnetflow import __version__
from isnetflow.training.trainjob import (
    API_VERSION,
    COMMAND,
    GROUP,
    KIND,
    PLURAL,
    RESERVED_ENV,
    TRAINER_JOB,
    trainjob_manifest,
)

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
    }
    kwargs.update(overrides)
    return trainjob_manifest("cxr-train-7f3a9c", **kwargs)


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


def test_the_manifest_validates_against_the_vendored_crd() -> None:
    assert crd_errors(full()) == []


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
