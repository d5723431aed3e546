"""Component: data source (synthetic cohort when no input) + DICOM validation."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Output

from isnetflow_kfp.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(
    settings_json: str,
    input_uri: str,
    labels_uri: str,
    external_sites_json: str,
    data: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> bool:
    """Validate the input (or the generated cohort); returns whether validation passed."""

    from pathlib import Path

    from isnetflow import tasks

    out = tasks.ingest(settings_json, data.path, input_uri, labels_uri, external_sites_json)
    for key, value in out.metrics.items():
        metrics.log_metric(key, value)
    Path(report.path).write_text(out.html or "")
    data.metadata.update(out.metadata)
    return bool(out.value)
