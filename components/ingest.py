"""Component: data source (synthetic cohort when no input) + DICOM validation."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Metrics, Output

from components.image import IMAGE


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
    import json
    from pathlib import Path

    from isnetflow.config import Settings
    from isnetflow.stages import ingest as stage
    from isnetflow.viz import images_html

    settings = Settings.model_validate_json(settings_json)
    summary = stage.run(
        settings,
        data.path,
        input_uri=input_uri,
        labels_uri=labels_uri,
        external_sites=json.loads(external_sites_json or "[]"),
    )
    v = summary["validation"]
    for key in ("files", "pass_rate"):
        metrics.log_metric(key, float(v[key]))
    metrics.log_metric("valid", float(v["counts"].get("valid", 0)))
    metrics.log_metric("quarantined", float(v["counts"].get("quarantined", 0)))
    metrics.log_metric("ignored", float(v["counts"].get("ignored", 0)))
    figures = []
    preview = stage.resolve(data.path, summary["cohort_preview"])
    if preview is not None:
        figures.append(("synthetic cohort: examples per site and class", preview))
    note = f"{v['counts']} — pass rate {v['pass_rate']:.3f}; {summary['reason'] or 'validation passed'}"
    Path(report.path).write_text(images_html("Ingest and validation", figures, note=note))
    data.metadata.update({"valid": int(v["counts"].get("valid", 0)), "passed": summary["passed"]})
    return bool(summary["passed"])
