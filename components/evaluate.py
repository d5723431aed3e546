"""Component: external-hospital evaluation + shortcut audit of one trained model, and its gate check."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.image import IMAGE


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
) -> bool:
    """Evaluate, then check the promotion gates without registering (dry run); returns all-gates-passed.

    For the pipeline's ``candidate`` (the model promotion would register) the gate outcome is also
    recorded for scheduled retraining: a refused candidate is not retrained on the same data and recipe.
    """
    import json
    from pathlib import Path

    from isnetflow.config import Settings
    from isnetflow.evaluation import keys
    from isnetflow.stages import evaluate, promote, retrain

    settings = Settings.model_validate_json(settings_json)
    info = json.loads((Path(data.path) / "ingest.json").read_text())
    validated = Path(data.path) / info["validated"]
    model_uri = model.metadata["mlflow_model_uri"]
    masks_dir = Path(masks.path) / "masks"
    payload = evaluate.run(
        settings.evaluate,
        model_uri,
        validated,
        masks_dir,
        evaluation.path,
        tracking_uri=tracking_uri or None,
        train_fallback=settings.train,
        progress=False,
    )
    decision = promote.run(
        settings.promote,
        model_uri,
        evaluation=Path(evaluation.path) / "evaluation.json",
        tracking_uri=tracking_uri or None,
        dry_run=True,
        mask_model_version=mask_model_version,
        data=validated,
        masks=masks_dir,
        evaluate_cfg=settings.evaluate,
        train_fallback=settings.train,
    )
    (Path(evaluation.path) / "gates.json").write_text(json.dumps(decision, indent=2, default=str))
    if candidate:
        retrain.record_candidate_outcome(
            validated,
            tracking_uri or None,
            settings.promote.registered_model,
            recipe=retrain.recipe_digest(settings),
            all_gates_passed=bool(decision["all_gates_passed"]),
            failed_gates=[g["name"] for g in decision["gates"] if not g["passed"]],
            candidate_uri=model_uri,
        )
    for split in (keys.INTERNAL_TEST, keys.EXTERNAL_POOLED):
        auc = payload[keys.SPLITS][split][keys.AUC]
        if auc is not None:
            metrics.log_metric(f"{split}_auc", float(auc))
    share = keys.get(payload, keys.BACKGROUND_SHARE)
    if share is not None:
        metrics.log_metric("background_share", float(share))
    cm = payload.get(keys.CLASSIFICATION_METRICS, {}).get(keys.EXTERNAL_POOLED)
    if cm:  # absent when the external set holds a single class (no ROC curve exists)
        roc_external.log_roc_curve(cm["roc"]["fpr"], cm["roc"]["tpr"], cm["roc"]["thresholds"])
        roc_external.log_confusion_matrix(
            cm["confusion_matrix"]["categories"], cm["confusion_matrix"]["matrix"]
        )
    Path(report.path).write_text((Path(evaluation.path) / "report.html").read_text())
    return bool(decision["all_gates_passed"])
