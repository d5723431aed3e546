"""Component: train one classifier on several GPUs as a Kubeflow Trainer TrainJob, and wait for it."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from isnetflow_kfp.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model_distributed(
    settings_json: str,
    mode: str,
    tracking_uri: str,
    pipeline_run: str,
    gpus: int,
    nodes: int,
    image: str,
    cluster_json: str,
    data: Input[Dataset],
    masks: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    heatmaps: Output[HTML],
) -> str:
    """Submit the training of ``mode`` on ``gpus`` GPUs over ``nodes`` nodes; returns the MLflow model URI.

    ``cluster_json`` names the Kubernetes objects the job's pods use (secrets, config keys, labels, service
    account, GPU node selector and toleration), written by the pipeline. The outputs are those of
    ``train_model``: the model artifact's metadata names the MLflow model the job logged.
    """

    from pathlib import Path

    from isnetflow import tasks

    out = tasks.train_model_distributed(
        settings_json,
        mode,
        tracking_uri,
        pipeline_run,
        gpus,
        nodes,
        image,
        cluster_json,
        data.path,
        data.uri,
        masks.uri,
        model.path,
    )
    for key, value in out.metrics.items():
        metrics.log_metric(key, value)
    model.metadata.update(out.metadata)
    Path(heatmaps.path).write_text(out.html or "")
    return str(out.value)
