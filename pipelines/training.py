"""The isnetflow training pipeline (kfp v2).

ingest (synthetic cohort when no input; DICOM validation) -> [validation passed] -> lung masks ->
train ISNet and the standard baseline in parallel (same network, same schedule) -> evaluate each on
internal and external hospitals (+ shortcut audit, gate check) -> [ISNet gates passed] -> promote.
Every task is a thin component from ``components/`` calling a stage function of :mod:`isnetflow.stages`.
"""

from kfp import dsl

from components.evaluate import evaluate_model
from components.ingest import ingest
from components.masks import lung_masks
from components.promote import promote_model
from components.train import train_model
from isnetflow.config import Settings

PIPELINE_NAME = "isnetflow-training"
DEFAULT_SETTINGS_JSON = Settings().model_dump_json()


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Validate chest X-ray DICOM, mask lungs, train ISNet vs standard, evaluate externally, "
    "register approved models in MLflow.",
)
def training_pipeline(
    settings_json: str = DEFAULT_SETTINGS_JSON,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites_json: str = "[]",
    tracking_uri: str = "",
) -> None:
    data = ingest(
        settings_json=settings_json,
        input_uri=input_uri,
        labels_uri=labels_uri,
        external_sites_json=external_sites_json,
    ).set_display_name("ingest + validate")
    data.set_cpu_request("2").set_memory_request("2Gi").set_memory_limit("8Gi").set_retry(2)
    with dsl.If(data.outputs["Output"] == True, name="validation-passed"):  # noqa: E712 (kfp condition)
        masks = lung_masks(
            settings_json=settings_json, tracking_uri=tracking_uri, data=data.outputs["data"]
        ).set_display_name("lung masks")
        masks.set_cpu_request("2").set_memory_request("2Gi").set_memory_limit("8Gi").set_retry(1)
        evaluations = {}
        trained = {}
        for mode in ("isnet", "standard"):
            train = train_model(
                settings_json=settings_json,
                mode=mode,
                tracking_uri=tracking_uri,
                data=data.outputs["data"],
                masks=masks.outputs["masks"],
            ).set_display_name(f"train {mode}")
            train.set_cpu_request("4").set_memory_request("8Gi").set_memory_limit("16Gi")
            train.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
            train.set_caching_options(False)
            ev = evaluate_model(
                settings_json=settings_json,
                tracking_uri=tracking_uri,
                mask_model_version=masks.outputs["Output"],
                data=data.outputs["data"],
                masks=masks.outputs["masks"],
                model=train.outputs["model"],
            ).set_display_name(f"evaluate {mode}")
            ev.set_cpu_request("2").set_memory_request("4Gi").set_memory_limit("8Gi").set_retry(1)
            evaluations[mode], trained[mode] = ev, train
        with dsl.If(evaluations["isnet"].outputs["Output"] == True, name="gates-passed"):  # noqa: E712
            promote_model(
                settings_json=settings_json,
                tracking_uri=tracking_uri,
                mask_model_version=masks.outputs["Output"],
                data=data.outputs["data"],
                masks=masks.outputs["masks"],
                model=trained["isnet"].outputs["model"],
                evaluation=evaluations["isnet"].outputs["evaluation"],
            ).set_display_name("promote ISNet").set_caching_options(False).set_cpu_request(
                "1"
            ).set_memory_request("2Gi").set_memory_limit("4Gi").set_retry(2)
