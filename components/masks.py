"""Component: a QC'd lung mask for every valid image (provided masks first, else the shipped segmenter)."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from components.image import IMAGE


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
    import json
    from pathlib import Path

    from isnetflow.config import Settings
    from isnetflow.stages import ingest, segmenter
    from isnetflow.stages import masks as stage
    from isnetflow.viz import images_html

    settings = Settings.model_validate_json(settings_json)
    info = json.loads((Path(data.path) / "ingest.json").read_text())
    version = segmenter.register_shipped(tracking_uri) if tracking_uri else ""
    result = stage.run(
        settings.masks,
        Path(data.path) / info["validated"],
        masks.path,
        ingest.resolve(data.path, info["provided_masks"]),
        model_version=version or None,
        tracking_uri=tracking_uri or None,
    )
    counts = result.summary.get("counts", {})
    for key, value in counts.items():
        if isinstance(value, int | float):
            metrics.log_metric(f"masks_{key}", float(value))
    Path(gallery.path).write_text(
        images_html("Lung masks", [("overlays, QC failures first", Path(masks.path) / "gallery.png")])
    )
    masks.metadata.update({"segmenter_version": version})
    return str(version)
