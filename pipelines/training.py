"""The isnetflow training pipeline (kfp v2).

ingest (synthetic cohort when no input; DICOM validation) -> [validation passed] -> data check (data or
recipe new since the champion and every refused candidate? see :mod:`isnetflow.stages.retrain`) -> [yes, or
``skip_if_unchanged`` off] -> lung masks -> train ISNet and the standard baseline in parallel (same
network, same schedule) -> evaluate each on internal and external hospitals (+ shortcut audit, gate
check; the standard model first: the ISNet's do-no-harm gate compares it with the standard model's
evaluation of the same run) -> [ISNet gates passed] -> promote.

Every task is a thin component from ``components/`` calling a stage function of :mod:`isnetflow.stages`.

Kubernetes settings (kfp-kubernetes; kfp.local ignores them): every task that reads S3 or talks to
MLflow gets its credentials from the Secrets ``isnetflow-s3-credentials`` and
``isnetflow-mlflow-credentials`` and its endpoints from the ConfigMap ``isnetflow-config``; the two
training tasks ask for one ``nvidia.com/gpu`` and run on GPU nodes (node selector + toleration).

``train_gpus`` above 1 takes the distributed branch: each training task is a launcher without a GPU that
submits a Kubeflow Trainer ``TrainJob`` (``torchrun`` on ``train_nodes`` pods of ``train_gpus /
train_nodes`` GPUs each, the same image and training entry point), waits for it and passes on the MLflow
model it logged (:func:`isnetflow.stages.train.run_trainjob`). The job's pods get the Secrets by
reference, the endpoints, the MLflow client label, a token-less service account and GPU nodes.

Caching is off where a cached result would be wrong: ingest (the same ``input_uri`` can hold new
files), the data check (the champion moves), training and promotion (they must run every time). The
lung masks and the evaluations are pure functions of their inputs and stay cacheable.
"""

import json
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask

from isnetflow.cluster.names import (
    CONFIG_MAP,
    MLFLOW_CLIENT_LABEL,
    MLFLOW_SECRET,
    S3_CLIENT_LABEL,
    S3_SECRET,
    WORKLOAD_ACCOUNT,
)
from isnetflow.config import Settings
from isnetflow_kfp.components.data_check import data_changed
from isnetflow_kfp.components.evaluate import evaluate_model
from isnetflow_kfp.components.image import IMAGE
from isnetflow_kfp.components.ingest import ingest
from isnetflow_kfp.components.masks import lung_masks
from isnetflow_kfp.components.promote import promote_model
from isnetflow_kfp.components.train import train_model
from isnetflow_kfp.components.train_distributed import train_model_distributed

PIPELINE_NAME = "isnetflow-training"
DEFAULT_SETTINGS_JSON = Settings().model_dump_json()

#: the keys the tasks read from the Secrets and the ConfigMap of k8s/ (names: isnetflow.cluster.names)
S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
MLFLOW_SECRET_KEYS = {
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
}
CONFIG_MAP_KEYS = {
    k: k for k in ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
}
GPU_NODE_LABEL = ("nvidia.com/gpu.present", "true")
GPU_TAINT_KEY = "nvidia.com/gpu"
#: what a TrainJob's pods get (components/train_distributed.py): the same endpoints (copied from the
#: launching task's ConfigMap variables) and Secrets as a single-pod training, the label that lets them
#: reach MLflow (k8s/base/networkpolicies.yaml), GPU nodes
CLUSTER_JSON = json.dumps(
    {
        "passthrough_env": sorted(CONFIG_MAP_KEYS),
        "secret_env": {k: [S3_SECRET, v] for k, v in S3_SECRET_KEYS.items()}
        | {k: [MLFLOW_SECRET, v] for k, v in MLFLOW_SECRET_KEYS.items()},
        # MLflow's policy admits its clients; MinIO's (the dev overlay) its S3 clients: the pods read S3
        "pod_labels": {MLFLOW_CLIENT_LABEL: "true", S3_CLIENT_LABEL: "true"},
        "service_account": WORKLOAD_ACCOUNT,
        "node_selector": dict([GPU_NODE_LABEL]),
        "tolerations": [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    },
    sort_keys=True,
)


def _s3(task: PipelineTask) -> PipelineTask:
    """S3 credentials (required) and the endpoints/region (optional ConfigMap keys) as env variables."""
    kubernetes.use_secret_as_env(task, S3_SECRET, S3_SECRET_KEYS)
    kubernetes.use_config_map_as_env(task, CONFIG_MAP, CONFIG_MAP_KEYS, optional=True)
    return task


def _s3_and_mlflow(task: PipelineTask) -> PipelineTask:
    """As :func:`_s3`, plus MLflow basic-auth credentials (optional: a tracking server may have none).

    MLflow artifacts live in S3, so every task that talks to MLflow also needs the S3 credentials.
    """
    _s3(task)
    kubernetes.use_secret_as_env(task, MLFLOW_SECRET, MLFLOW_SECRET_KEYS, optional=True)
    return task


def _gpu(task: PipelineTask) -> PipelineTask:
    """One NVIDIA GPU, on a GPU node (label set by the NVIDIA GPU operator; tolerate its taint)."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    kubernetes.add_node_selector(task, *GPU_NODE_LABEL)
    kubernetes.add_toleration(task, key=GPU_TAINT_KEY, operator="Exists", effect="NoSchedule")
    return task


def _train_evaluate_promote(
    settings_json: str,
    tracking_uri: str,
    data: PipelineTask,
    masks: PipelineTask,
    gpus: Any = None,
    nodes: Any = None,
) -> None:
    """Train the ISNet and the baseline (in their own pods, or as TrainJobs when ``gpus`` is given),
    evaluate both, and promote the ISNet if it passed its gates."""
    trained: dict[str, PipelineTask] = {}
    for mode in ("isnet", "standard"):
        train: PipelineTask
        if gpus is None:
            train = train_model(
                settings_json=settings_json,
                mode=mode,
                tracking_uri=tracking_uri,
                # checkpoints under <train.checkpoint_dir>/<run id>/<mode>: the two trainings run in
                # parallel and never share files; a retry resumes from its own
                pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                data=data.outputs["data"],
                masks=masks.outputs["masks"],
            ).set_display_name(f"train {mode}")
            train.set_cpu_request("4").set_memory_request("8Gi").set_memory_limit("16Gi").set_retry(1)
            _s3_and_mlflow(_gpu(train.set_caching_options(False)))
        else:
            train = train_model_distributed(
                settings_json=settings_json,
                mode=mode,
                tracking_uri=tracking_uri,
                # the TrainJob's name derives from the run id and mode: a retried launcher adopts its job
                pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                gpus=gpus,
                nodes=nodes,
                image=IMAGE,
                cluster_json=CLUSTER_JSON,
                data=data.outputs["data"],
                masks=masks.outputs["masks"],
            ).set_display_name(f"train {mode} (TrainJob)")
            # the launcher only submits and waits: no GPU of its own
            train.set_cpu_request("500m").set_memory_request("1Gi").set_memory_limit("2Gi").set_retry(1)
            _s3_and_mlflow(train.set_caching_options(False))
        trained[mode] = train
    # the standard model first: the ISNet's gate check compares it with the standard model's external AUC
    # of this run (the do-no-harm gate), so its evaluation task takes the standard model's evaluation
    evaluations: dict[str, PipelineTask] = {}
    for mode in ("standard", "isnet"):
        baseline = {"baseline": evaluations["standard"].outputs["evaluation"]} if mode == "isnet" else {}
        ev = evaluate_model(
            settings_json=settings_json,
            tracking_uri=tracking_uri,
            mask_model_version=masks.outputs["Output"],
            candidate=mode == "isnet",  # the model the gates-passed branch promotes
            data=data.outputs["data"],
            masks=masks.outputs["masks"],
            model=trained[mode].outputs["model"],
            **baseline,
        ).set_display_name(f"evaluate {mode}")
        ev.set_cpu_request("2").set_memory_request("4Gi").set_memory_limit("8Gi").set_retry(1)
        _s3_and_mlflow(ev)
        evaluations[mode] = ev
    with dsl.If(evaluations["isnet"].outputs["Output"] == True, name="gates-passed"):  # noqa: E712
        promote = promote_model(
            settings_json=settings_json,
            tracking_uri=tracking_uri,
            mask_model_version=masks.outputs["Output"],
            data=data.outputs["data"],
            masks=masks.outputs["masks"],
            model=trained["isnet"].outputs["model"],
            evaluation=evaluations["isnet"].outputs["evaluation"],
            baseline=evaluations["standard"].outputs["evaluation"],
        ).set_display_name("promote ISNet")
        promote.set_cpu_request("1").set_memory_request("2Gi").set_memory_limit("4Gi").set_retry(2)
        _s3_and_mlflow(promote.set_caching_options(False))


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Validate chest X-ray DICOM, mask lungs, train ISNet vs standard, evaluate externally, "
    "register approved models in MLflow.",
)
def training_pipeline(
    settings_json: str = DEFAULT_SETTINGS_JSON,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites_json: str = "[]",
    tracking_uri: str = "",
    skip_if_unchanged: bool = True,
    train_gpus: int = 1,
    train_nodes: int = 1,
) -> None:
    """The pipeline graph (see the module docstring); ``train_gpus`` above 1 takes the distributed branch."""
    data = ingest(
        settings_json=settings_json,
        input_uri=input_uri,
        labels_uri=labels_uri,
        external_sites_json=external_sites_json,
    ).set_display_name("ingest + validate")
    data.set_cpu_request("2").set_memory_request("2Gi").set_memory_limit("8Gi").set_retry(2)
    data.set_caching_options(False)
    _s3(data)
    with dsl.If(data.outputs["Output"] == True, name="validation-passed"):  # noqa: E712 (kfp condition)
        check = data_changed(
            settings_json=settings_json,
            tracking_uri=tracking_uri,
            skip_if_unchanged=skip_if_unchanged,
            data=data.outputs["data"],
        ).set_display_name("data changed?")
        check.set_cpu_request("1").set_memory_request("1Gi").set_memory_limit("2Gi").set_retry(2)
        _s3_and_mlflow(check.set_caching_options(False))
        with dsl.If(check.outputs["Output"] == True, name="data-changed"):  # noqa: E712
            masks = lung_masks(
                settings_json=settings_json, tracking_uri=tracking_uri, data=data.outputs["data"]
            ).set_display_name("lung masks")
            masks.set_cpu_request("2").set_memory_request("2Gi").set_memory_limit("8Gi").set_retry(1)
            _s3_and_mlflow(masks)
            # One GPU: each training runs in its own pod. More: each training task submits a TrainJob
            # (torchrun on train_nodes pods of train_gpus / train_nodes GPUs) and waits for it. The two
            # paths are whole branches (train -> evaluate -> promote), not one join through dsl.OneOf:
            # kfp.local, and with it the local end-to-end run, does not resolve OneOf artifacts.
            with dsl.If(train_gpus <= 1, name="single-pod-training"):
                _train_evaluate_promote(settings_json, tracking_uri, data, masks)
            with dsl.Else(name="distributed-training"):
                _train_evaluate_promote(settings_json, tracking_uri, data, masks, train_gpus, train_nodes)
