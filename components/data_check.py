"""Component: anything new to train on (data or recipe) since the champion or a refused candidate?

Scheduled retraining's early exit; see :mod:`isnetflow.stages.retrain`.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def data_changed(
    settings_json: str,
    tracking_uri: str,
    skip_if_unchanged: bool,
    data: Input[Dataset],
    data_check: Output[Artifact],
) -> bool:
    """Compare data fingerprint and recipe with the champion's and refused candidates'; returns whether
    the pipeline should train."""
    import json
    from pathlib import Path

    from isnetflow.config import Settings
    from isnetflow.stages import retrain

    settings = Settings.model_validate_json(settings_json)
    info = json.loads((Path(data.path) / "ingest.json").read_text())
    result = retrain.check_data_changed(
        Path(data.path) / info["validated"],
        tracking_uri or None,
        settings.promote.registered_model,
        skip_if_unchanged=skip_if_unchanged,
        recipe=retrain.recipe_digest(settings),
    )
    Path(data_check.path).write_text(json.dumps(result, indent=2))
    data_check.metadata.update({k: result[k] for k in ("changed", "decision", "fingerprint", "reason")})
    return bool(result["proceed"])
