"""Component: register the candidate and move the `champion` alias (runs only when its gates passed)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote_model(
    settings_json: str,
    tracking_uri: str,
    mask_model_version: str,
    data: Input[Dataset],
    masks: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    decision: Output[Artifact],
) -> str:
    """Register with gate and lineage tags; `champion` moves only if every gate passes. Returns model URI."""
    import json
    from pathlib import Path

    from isnetflow.config import Settings
    from isnetflow.stages import promote, retrain

    settings = Settings.model_validate_json(settings_json)
    info = json.loads((Path(data.path) / "ingest.json").read_text())
    result = promote.run(
        settings.promote,
        model.metadata["mlflow_model_uri"],
        evaluation=Path(evaluation.path) / "evaluation.json",
        tracking_uri=tracking_uri or None,
        mask_model_version=mask_model_version,
        data=Path(data.path) / info["validated"],
        masks=Path(masks.path) / "masks",
        evaluate_cfg=settings.evaluate,
        train_fallback=settings.train,
        recipe=retrain.recipe_digest(settings),
    )
    Path(decision.path).write_text(json.dumps(result, indent=2, default=str))
    return str(result.get("model_uri", ""))
