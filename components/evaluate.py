"""Component: external-hospital evaluation + shortcut audit of one trained model, and its gate check."""

from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from isnetflow_kfp.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_model(
    settings_json: str,
    tracking_uri: str,
    mask_model_version: str,
    candidate: bool,
    data: Input[Dataset],
    masks: Input[Dataset],
    model: Input[Model],
    evaluation: Output[Artifact],
    report: Output[HTML],
    roc_external: Output[ClassificationMetrics],
    metrics: Output[Metrics],
    baseline: Optional[Input[Artifact]] = None,  # noqa: UP045 (kfp reads the annotation)
) -> bool:
    """Evaluate, then check the promotion gates without registering (dry run); returns all-gates-passed.

    ``baseline``: the standard model's evaluation of the same run, for the candidate's do-no-harm gate.

    For the pipeline's ``candidate`` (the model promotion would register) the gate outcome is also
    recorded for scheduled retraining: a refused candidate is not retrained on the same data and recipe.
    """

    from pathlib import Path

    from isnetflow import tasks

    out = tasks.evaluate_model(
        settings_json,
        tracking_uri,
        mask_model_version,
        candidate,
        data.path,
        masks.path,
        model.metadata["mlflow_model_uri"],
        evaluation.path,
        baseline=baseline.path if baseline is not None else None,
    )
    for key, value in out.metrics.items():
        metrics.log_metric(key, value)
    if out.roc is not None and out.confusion is not None:
        roc_external.log_roc_curve(out.roc["fpr"], out.roc["tpr"], out.roc["thresholds"])
        roc_external.log_confusion_matrix(out.confusion["categories"], out.confusion["matrix"])
    Path(report.path).write_text(out.html or "")
    return bool(out.value)
