"""Component: register the candidate and move the `champion` alias (runs only when its gates passed)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from isnetflow_kfp.components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote_model(
    settings_json: str,
    tracking_uri: str,
    mask_model_version: str,
    data: Input[Dataset],
    masks: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    baseline: Input[Artifact],
    decision: Output[Artifact],
) -> str:
    """Register with gate and lineage tags; `champion` moves only if every gate passes. Returns model URI.

    ``baseline``: the standard model's evaluation of the same run (the do-no-harm gate is checked again).
    """

    from isnetflow import tasks

    out = tasks.promote_model(
        settings_json,
        tracking_uri,
        mask_model_version,
        data.path,
        masks.path,
        model.metadata["mlflow_model_uri"],
        evaluation.path,
        decision.path,
        baseline=baseline.path,
    )
    return str(out.value)
