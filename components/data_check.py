"""Component: anything new to train on (data or recipe) since the champion or a refused candidate?

Scheduled retraining's early exit; see :mod:`isnetflow.stages.retrain`.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from isnetflow_kfp.components.image import IMAGE


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

    from isnetflow import tasks

    out = tasks.data_changed(settings_json, tracking_uri, skip_if_unchanged, data.path, data_check.path)
    data_check.metadata.update(out.metadata)
    return bool(out.value)
