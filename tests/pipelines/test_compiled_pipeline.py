"""The compiled pipeline YAML: tasks, images, GPU placement, secrets/config, conditions, caching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler

from components.image import IMAGE
from pipelines.training import training_pipeline

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

    training = _dag(spec, changed["componentRef"]["name"])
    assert set(training) == {
        "lung-masks",
        "train-model",
        "train-model-2",
        "evaluate-model",
        "evaluate-model-2",
        "condition-3",
    }
    modes = {n: training[n]["inputs"]["parameters"]["mode"]["runtimeValue"]["constant"] for n in TRAIN_TASKS}
    assert modes == {"train-model": "isnet", "train-model-2": "standard"}
    for name in TRAIN_TASKS:
        # each training's checkpoints live under <train.checkpoint_dir>/<run id>/<mode>; a retry resumes there
        run = training[name]["inputs"]["parameters"]["pipeline_run"]["runtimeValue"]["constant"]
        assert run == "{{$.pipeline_job_uuid}}", name
        assert training[name]["retryPolicy"]["maxRetryCount"] == 1, name
    assert training["evaluate-model"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"][
        "producerTask"
    ] == ("train-model")
    gates = training["condition-3"]
    assert gates["taskInfo"]["name"] == "gates-passed"
    # promotion waits on the ISNet evaluation's gate result (evaluate-model evaluates train-model = isnet)
    assert (
        gates["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--evaluate-model-Output'] == true"
    )
    promotion = _dag(spec, gates["componentRef"]["name"])
    assert list(promotion) == ["promote-model"]
    assert promotion["promote-model"]["inputs"]["artifacts"]["model"] == {
        "componentInputArtifact": "pipelinechannel--train-model-model"
    }

    tasks = {**root, **after_validation, **training, **promotion}
    cached = {n for n, t in tasks.items() if (t.get("cachingOptions") or {}).get("enableCache")}
    assert cached == {"lung-masks", "evaluate-model", "evaluate-model-2"}
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
        "exec-evaluate-model",
        "exec-evaluate-model-2",
        "exec-promote-model",
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
