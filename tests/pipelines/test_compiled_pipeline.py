"""The compiled pipeline YAML: tasks, images, GPU placement, secrets/config, conditions, caching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler

from isnetflow_kfp.components.image import IMAGE
from isnetflow_kfp.pipelines.training import training_pipeline

S3 = {
    "secretName": "isnetflow-s3-credentials",
    "keyToEnv": [
        {"secretKey": "AWS_ACCESS_KEY_ID", "envVar": "AWS_ACCESS_KEY_ID"},
        {"secretKey": "AWS_SECRET_ACCESS_KEY", "envVar": "AWS_SECRET_ACCESS_KEY"},
    ],
    "optional": False,
}
MLFLOW = {
    "secretName": "isnetflow-mlflow-credentials",
    "keyToEnv": [
        {"secretKey": "MLFLOW_TRACKING_USERNAME", "envVar": "MLFLOW_TRACKING_USERNAME"},
        {"secretKey": "MLFLOW_TRACKING_PASSWORD", "envVar": "MLFLOW_TRACKING_PASSWORD"},
    ],
    "optional": True,
}
CONFIG_KEYS = ["MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"]
TRAIN_TASKS = ("train-model", "train-model-2")
TRAIN = tuple(f"exec-{t}" for t in TRAIN_TASKS)
MULTI_TASKS = ("train-model-distributed", "train-model-distributed-2")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    compiler.Compiler().compile(training_pipeline, str(out))
    spec, platform = yaml.safe_load_all(Path(out).read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _dag(spec: dict[str, Any], component: str | None = None) -> dict[str, Any]:
    tasks: dict[str, Any] = (spec["root"] if component is None else spec["components"][component])["dag"][
        "tasks"
    ]
    return tasks


def test_tasks_conditions_and_caching(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, _ = compiled
    root = _dag(spec)
    assert set(root) == {"ingest", "condition-1"}
    validation = root["condition-1"]
    assert validation["taskInfo"]["name"] == "validation-passed"
    assert (
        validation["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--ingest-Output'] == true"
    )

    after_validation = _dag(spec, validation["componentRef"]["name"])
    assert set(after_validation) == {"data-changed", "condition-2"}
    check = after_validation["data-changed"]
    assert check["inputs"]["parameters"]["skip_if_unchanged"] == {
        "componentInputParameter": "pipelinechannel--skip_if_unchanged"
    }
    changed = after_validation["condition-2"]
    assert changed["taskInfo"]["name"] == "data-changed"
    assert (
        changed["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--data-changed-Output'] == true"
    )

    masked = _dag(spec, changed["componentRef"]["name"])
    assert set(masked) == {"lung-masks", "condition-branches-3"}
    # train -> evaluate -> promote: in the tasks' own pods for one GPU, as TrainJobs above one GPU
    branches = _dag(spec, masked["condition-branches-3"]["componentRef"]["name"])
    one_gpu = "int(inputs.parameter_values['pipelinechannel--train_gpus']) <= 1"
    paths = {b["taskInfo"]["name"]: b for b in branches.values()}
    assert set(paths) == {"single-pod-training", "distributed-training"}
    assert paths["single-pod-training"]["triggerPolicy"]["condition"] == one_gpu
    assert paths["distributed-training"]["triggerPolicy"]["condition"] == f"!({one_gpu})"
    promotion: dict[str, Any] = {}
    training: dict[str, Any] = {}
    # ev1: the ISNet's evaluation, ev2: the standard model's, built first (the ISNet's do-no-harm gate
    # takes its evaluation), so ev1 carries the "-2" / "-4" suffix
    for path, (trainer, ev1, ev2, prom) in {
        "single-pod-training": ("train-model", "evaluate-model-2", "evaluate-model", "promote-model"),
        "distributed-training": (
            "train-model-distributed",
            "evaluate-model-4",
            "evaluate-model-3",
            "promote-model-2",
        ),
    }.items():
        dag = _dag(spec, paths[path]["componentRef"]["name"])
        gates_name = next(n for n in dag if n.startswith("condition-"))
        assert set(dag) == {trainer, f"{trainer}-2", ev1, ev2, gates_name}, path
        modes = {
            n: dag[n]["inputs"]["parameters"]["mode"]["runtimeValue"]["constant"]
            for n in (trainer, f"{trainer}-2")
        }
        assert modes == {trainer: "isnet", f"{trainer}-2": "standard"}, path
        for name in (trainer, f"{trainer}-2"):
            # checkpoints under <train.checkpoint_dir>/<run id>/<mode>; a retry resumes there (a TrainJob's
            # name derives from the run id too: a retried launcher adopts its job)
            run = dag[name]["inputs"]["parameters"]["pipeline_run"]["runtimeValue"]["constant"]
            assert run == "{{$.pipeline_job_uuid}}", name
            assert dag[name]["retryPolicy"]["maxRetryCount"] == 1, name
        assert dag[ev1]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == trainer
        assert (
            dag[ev2]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == f"{trainer}-2"
        )
        # the ISNet's gate check gets the standard model's evaluation of this run (the do-no-harm gate);
        # the standard model's own check gets none
        assert dag[ev1]["inputs"]["artifacts"]["baseline"] == {
            "taskOutputArtifact": {"outputArtifactKey": "evaluation", "producerTask": ev2}
        }
        assert "baseline" not in dag[ev2]["inputs"]["artifacts"]
        assert dag[ev1]["inputs"]["parameters"]["candidate"]["runtimeValue"]["constant"] is True
        assert dag[ev2]["inputs"]["parameters"]["candidate"]["runtimeValue"]["constant"] is False
        gates = dag[gates_name]
        assert gates["taskInfo"]["name"] == "gates-passed"
        # promotion waits on the ISNet evaluation's gate result
        assert (
            gates["triggerPolicy"]["condition"]
            == f"inputs.parameter_values['pipelinechannel--{ev1}-Output'] == true"
        )
        promote = _dag(spec, gates["componentRef"]["name"])
        assert list(promote) == [prom]
        assert promote[prom]["inputs"]["artifacts"]["model"] == {
            "componentInputArtifact": f"pipelinechannel--{trainer}-model"
        }
        assert promote[prom]["inputs"]["artifacts"]["baseline"] == {
            "componentInputArtifact": f"pipelinechannel--{ev2}-evaluation"
        }
        training |= dag
        promotion |= promote

    tasks = {**root, **after_validation, **masked, **training, **promotion}
    cached = {n for n, t in tasks.items() if (t.get("cachingOptions") or {}).get("enableCache")}
    assert cached == {
        "lung-masks",
        "evaluate-model",
        "evaluate-model-2",
        "evaluate-model-3",
        "evaluate-model-4",
    }
    assert spec["root"]["inputDefinitions"]["parameters"]["skip_if_unchanged"]["defaultValue"] is True


def test_images_and_gpu_only_on_training(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, k8s = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {
        "exec-ingest",
        "exec-data-changed",
        "exec-lung-masks",
        "exec-train-model",
        "exec-train-model-2",
        "exec-train-model-distributed",
        "exec-train-model-distributed-2",
        "exec-evaluate-model",
        "exec-evaluate-model-2",
        "exec-evaluate-model-3",
        "exec-evaluate-model-4",
        "exec-promote-model",
        "exec-promote-model-2",
    }
    for name, ex in executors.items():
        assert ex["container"]["image"] == IMAGE, name
        resources = ex["container"]["resources"]
        assert resources.get("resourceCpuRequest") and resources.get("resourceMemoryLimit"), name
        if name in TRAIN:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "1"
            assert k8s[name]["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
            assert k8s[name]["tolerations"] == [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ]
        else:
            assert "accelerator" not in resources, name
            assert "nodeSelector" not in k8s[name] and "tolerations" not in k8s[name], name


def test_secrets_and_config_map(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    spec, k8s = compiled
    assert set(k8s) == set(spec["deploymentSpec"]["executors"])  # every task talks to S3 or MLflow
    for name, cfg in k8s.items():
        secrets = [{k: s[k] for k in ("secretName", "keyToEnv", "optional")} for s in cfg["secretAsEnv"]]
        # ingest reads S3 only; every other task tracks to MLflow, whose artifacts are in S3
        assert secrets == ([S3] if name == "exec-ingest" else [S3, MLFLOW]), name
        for s in cfg["secretAsEnv"]:
            assert s["secretNameParameter"] == {"runtimeValue": {"constant": s["secretName"]}}
        (config_map,) = cfg["configMapAsEnv"]
        assert config_map["configMapName"] == "isnetflow-config"
        assert config_map["optional"] is True
        assert [(m["configMapKey"], m["envVar"]) for m in config_map["keyToEnv"]] == [
            (k, k) for k in CONFIG_KEYS
        ]


def test_distributed_training_task(compiled: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Above 1 GPU the task is a launcher: no GPU itself; the TrainJob's pods get GPUs, Secrets, MLflow."""
    import json

    spec, k8s = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["train_gpus"]["defaultValue"] == 1 and params["train_nodes"]["defaultValue"] == 1
    tasks = {
        t["taskInfo"]["name"]: t
        for c in spec["components"].values()
        for t in (c.get("dag") or {}).get("tasks", {}).values()
        if t["componentRef"]["name"].startswith("comp-train-model-distributed")
    }
    assert set(tasks) == {"train isnet (TrainJob)", "train standard (TrainJob)"}
    for name, task in tasks.items():
        inputs = task["inputs"]["parameters"]
        assert inputs["gpus"] == {"componentInputParameter": "pipelinechannel--train_gpus"}, name
        assert inputs["nodes"] == {"componentInputParameter": "pipelinechannel--train_nodes"}, name
        assert inputs["image"]["runtimeValue"]["constant"] == IMAGE  # the job runs the pipeline's image
        cluster = json.loads(inputs["cluster_json"]["runtimeValue"]["constant"])
        # the job's pods: the same Secrets by reference, token-less account, GPU nodes, MLflow's client label
        assert cluster["secret_env"] == {
            **{e["envVar"]: [S3["secretName"], e["secretKey"]] for e in S3["keyToEnv"]},
            **{e["envVar"]: [MLFLOW["secretName"], e["secretKey"]] for e in MLFLOW["keyToEnv"]},
        }
        assert cluster["passthrough_env"] == sorted(CONFIG_KEYS)
        assert cluster["service_account"] == "isnetflow-workload"
        assert cluster["node_selector"] == {"nvidia.com/gpu.present": "true"}
        assert cluster["pod_labels"] == {
            "isnetflow.io/mlflow-client": "true",
            "isnetflow.io/s3-client": "true",
        }
        policies = (Path(__file__).resolve().parents[2] / "k8s" / "base" / "networkpolicies.yaml").read_text()
        assert 'isnetflow.io/mlflow-client: "true"' in policies  # the label MLflow's policy admits
    for ex in ("exec-train-model-distributed", "exec-train-model-distributed-2"):
        resources = spec["deploymentSpec"]["executors"][ex]["container"]["resources"]
        assert "accelerator" not in resources and "nodeSelector" not in k8s[ex]
        command = " ".join(spec["deploymentSpec"]["executors"][ex]["container"]["args"])
        assert "train_model_distributed" in command
