"""Component: a QC'd lung mask for every valid image (provided masks first, else the shipped segmenter)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from isnetflow_kfp.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def lung_masks(
    settings_json: str,
    tracking_uri: str,
    data: Input[Dataset],
    masks: Output[Dataset],
    gallery: Output[HTML],
    metrics: Output[Metrics],
) -> str:
    """Write masks + mask_qc.csv + gallery; registers the shipped segmenter; returns its model version."""

    from pathlib import Path

    from isnetflow import tasks

    out = tasks.lung_masks(settings_json, tracking_uri, data.path, masks.path)
    for key, value in out.metrics.items():
        metrics.log_metric(key, value)
    Path(gallery.path).write_text(out.html or "")
    masks.metadata.update(out.metadata)
    return str(out.value)
