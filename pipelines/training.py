"""The isnetflow training pipeline (kfp v2).

Stages: synthetic cohort (demo data) -> validate -> masks -> train ISNet + standard -> evaluate ->
promote. Stages are added here as they land; each task is a thin component from ``components/``.
"""

from kfp import dsl

from components.synth import synth_cohort
from isnetflow.config import Settings

PIPELINE_NAME = "isnetflow-training"
DEFAULT_SETTINGS_JSON = Settings().model_dump_json()


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Validate chest X-ray DICOM, mask lungs, train ISNet vs standard, evaluate externally, "
    "register approved models in MLflow.",
)
def training_pipeline(settings_json: str = DEFAULT_SETTINGS_JSON) -> None:
    synth = synth_cohort(settings_json=settings_json).set_display_name("synthetic cohort")
    synth.set_cpu_request("1").set_memory_request("1Gi").set_memory_limit("4Gi")
