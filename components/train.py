"""Component: train one classifier (ISNet or the standard baseline) and log it to MLflow."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(
    settings_json: str,
    mode: str,
    tracking_uri: str,
    pipeline_run: str,
    data: Input[Dataset],
    masks: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    heatmaps: Output[HTML],
) -> str:
    """Train with ``mode`` (isnet | standard); returns the MLflow model URI.

    With ``train.checkpoint_dir`` set, checkpoints go to ``<checkpoint_dir>/<pipeline_run>/<mode>`` and a
    retried task resumes from its own latest checkpoint (a first attempt finds none and starts afresh).
    """
    import json
    from pathlib import Path

    from isnetflow.config import Settings
    from isnetflow.stages import train as stage
    from isnetflow.viz import images_html

    settings = Settings.model_validate_json(settings_json)
    cfg = settings.train.model_copy(update={"mode": mode})
    info = json.loads((Path(data.path) / "ingest.json").read_text())
    summary = stage.run(
        cfg,
        Path(data.path) / info["validated"],
        Path(masks.path) / "masks",
        model.path,
        tracking_uri=tracking_uri or None,
        run_name=f"train-{mode}",
        classes=list(settings.validate.classes),
        progress=False,
        resume=cfg.checkpoint_dir is not None,
        checkpoint_scope=pipeline_run,
    )
    metrics.log_metric("best_val_auc", float(summary["best_val_auc"]))
    metrics.log_metric("best_epoch", float(summary["best_epoch"]))
    metrics.log_metric("wall_seconds", float(summary["wall_seconds"]))
    model.metadata.update(
        {"mlflow_model_uri": summary["model_uri"], "mode": mode, "run_id": summary["run_id"]}
    )
    Path(heatmaps.path).write_text(
        images_html(
            f"{mode}: validation heatmaps",
            [("LRP relevance, label class", Path(model.path) / "heatmaps.png")],
        )
    )
    return str(summary["model_uri"])
