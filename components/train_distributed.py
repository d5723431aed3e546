"""Component: train one classifier on several GPUs as a Kubeflow Trainer TrainJob, and wait for it."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


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
    import json
    import os
    from pathlib import Path

    from isnetflow.stages import train as stage
    from isnetflow.viz import images_html

    cluster = json.loads(cluster_json)
    info = json.loads((Path(data.path) / "ingest.json").read_text())
    summary = stage.run_trainjob(
        settings_json,
        mode,
        f"{data.uri.rstrip('/')}/{info['validated']}",
        f"{masks.uri.rstrip('/')}/masks",
        model.path,
        gpus=gpus,
        nodes=nodes,
        image=image,
        pipeline_run=pipeline_run,
        tracking_uri=tracking_uri or None,
        # the endpoints this task got from the ConfigMap, as plain values; credentials by Secret reference
        env={k: os.environ[k] for k in cluster["passthrough_env"] if os.environ.get(k)},
        env_from_secrets={k: (s, key) for k, (s, key) in cluster["secret_env"].items()},
        pod_labels=cluster["pod_labels"],
        service_account=cluster["service_account"],
        node_selector=cluster["node_selector"],
        tolerations=cluster["tolerations"],
    )
    metrics.log_metric("best_val_auc", float(summary["best_val_auc"]))
    metrics.log_metric("best_epoch", float(summary["best_epoch"]))
    metrics.log_metric("wall_seconds", float(summary["wall_seconds"]))
    metrics.log_metric("gpus", float(gpus))
    model.metadata.update(
        {
            "mlflow_model_uri": summary["model_uri"],
            "mode": mode,
            "run_id": summary["run_id"],
            "trainjob": summary["trainjob"]["name"],
        }
    )
    Path(heatmaps.path).write_text(
        images_html(
            f"{mode}: validation heatmaps ({gpus} GPUs)",
            [("LRP relevance, label class", Path(model.path) / "heatmaps.png")],
        )
    )
    return str(summary["model_uri"])
