"""Component: train one classifier (ISNet or the standard baseline) and log it to MLflow."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from isnetflow_kfp.components.image import IMAGE


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

    from pathlib import Path

    from isnetflow import tasks

    out = tasks.train_model(
        settings_json, mode, tracking_uri, pipeline_run, data.path, masks.path, model.path
    )
    for key, value in out.metrics.items():
        metrics.log_metric(key, value)
    model.metadata.update(out.metadata)
    Path(heatmaps.path).write_text(out.html or "")
    return str(out.value)
