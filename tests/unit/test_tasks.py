"""The pipeline tasks (``isnetflow.tasks``) as plain functions: what each component hands its KFP outputs.

The compiled YAML and the kfp local run are covered in ``tests/pipelines``; here the logic runs without
kfp, on the tiny cohort and the tiny trained model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _configs import FAST_EVALUATE, Trained, strict_policy
from isnetflow import tasks
from isnetflow.config import Settings, SynthConfig, ValidateConfig
from isnetflow.evaluation import keys


def _data_artifact(root: Path, validated: Path, **extra: object) -> Path:
    """A data artifact as the ingest task leaves it, pointing at an existing validated folder."""
    root.mkdir(parents=True, exist_ok=True)
    info = {"validated": str(validated), "provided_masks": None, "passed": True, **extra}
    (root / tasks.INGEST_FILE).write_text(json.dumps(info))
    return root


def _masks_artifact(root: Path, masks: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / tasks.MASKS_SUBDIR).symlink_to(masks, target_is_directory=True)
    return root


def test_a_missing_or_damaged_data_artifact_is_one_line_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"{tmp_path}/ingest.json: cannot read the pipeline artifact"):
        tasks.DataArtifact.read(tmp_path)
    (tmp_path / tasks.INGEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"ingest\.json: cannot read the pipeline artifact"):
        tasks.DataArtifact.read(tmp_path)


def test_the_data_artifact_resolves_relative_entries_inside_itself(tmp_path: Path) -> None:
    data = tasks.DataArtifact(tmp_path, {"validated": "validated", "provided_masks": "/abs/masks"})
    assert data.validated == tmp_path / "validated"
    assert data.provided_masks == Path("/abs/masks")
    assert data.resolve(None) is None


def test_ingest_task_outputs_match_what_it_wrote(tmp_path: Path) -> None:
    """The demo path (no input): the cohort is generated and validated; the metrics, metadata and HTML
    the component publishes are those of the ``ingest.json`` written into the artifact."""
    settings = Settings(
        synth=SynthConfig(n=24, size=64, seed=3, workers=1),
        validate=ValidateConfig(image_size=64, min_images_per_site=1, workers=1),
    )
    out = tasks.ingest(settings.model_dump_json(), tmp_path, "", "", "[]")
    data = tasks.DataArtifact.read(tmp_path)
    assert out.value is data.passed
    assert out.metadata == {"valid": data.counts["valid"], "passed": data.passed}
    assert out.metrics["valid"] == data.counts["valid"] > 0
    assert out.metrics["files"] == data.counts["valid"] + data.counts["quarantined"] + data.counts["ignored"]
    assert set(out.metrics) == {"files", "pass_rate", "valid", "quarantined", "ignored"}
    assert data.validated.is_dir() and (data.validated / "manifest.csv").is_file()
    assert data.provided_masks is not None and data.provided_masks.is_dir()
    assert out.html is not None and "data:image/png;base64," in out.html  # the cohort preview


def test_evaluate_task_checks_the_gates_and_records_a_refused_candidate(
    eval_trained: Trained, tmp_path: Path
) -> None:
    """The evaluate task evaluates, checks the gates without registering (``gates.json``) and, for the
    pipeline's candidate, records the refusal: the data check then skips training on the same data and
    recipe, naming the failed gates."""
    settings = Settings(evaluate=FAST_EVALUATE, promote=strict_policy(registered_model="cxr-tasks"))
    settings_json = settings.model_dump_json()
    data = _data_artifact(tmp_path / "data", eval_trained.validated)
    masks = _masks_artifact(tmp_path / "masks", eval_trained.masks)
    uri = eval_trained.tracking_uri
    model_uri = eval_trained.summary["model_uri"]
    out = tasks.evaluate_model(settings_json, uri, "", True, data, masks, model_uri, tmp_path / "ev")

    payload = json.loads((tmp_path / "ev" / keys.EVALUATION_FILE).read_text())
    gates = json.loads((tmp_path / "ev" / tasks.GATES_FILE).read_text())
    assert gates["decision"] == "dry-run" and gates["version"] is None  # nothing registered
    assert out.value is False is gates["all_gates_passed"]
    failed = [g["name"] for g in gates["gates"] if not g["passed"]]
    assert "external_auc_ci_low" in failed or "background_share" in failed
    assert out.metrics["external_pooled_auc"] == payload[keys.SPLITS][keys.EXTERNAL_POOLED][keys.AUC]
    assert out.metrics["internal_test_auc"] == payload[keys.SPLITS][keys.INTERNAL_TEST][keys.AUC]
    assert out.html == (tmp_path / "ev" / "report.html").read_text()
    assert out.roc is not None and len(out.roc["fpr"]) == len(out.roc["tpr"]) >= 2
    assert out.confusion is not None and len(out.confusion["matrix"]) == 2

    check = tasks.data_changed(settings_json, uri, True, data, tmp_path / "check.json")
    assert out.metadata == {} and check.value is False
    assert check.metadata["decision"] == "skip"
    assert "already refused" in check.metadata["reason"] and failed[0] in check.metadata["reason"]
    assert json.loads((tmp_path / "check.json").read_text())["refused_before"]["candidate_uri"] == model_uri

    # not the candidate (the baseline): evaluated and checked, but no outcome recorded
    other = strict_policy(registered_model="cxr-tasks-baseline")
    settings_json = settings.model_copy(update={"promote": other}).model_dump_json()
    tasks.evaluate_model(settings_json, uri, "", False, data, masks, model_uri, tmp_path / "ev2")
    assert tasks.data_changed(settings_json, uri, True, data, tmp_path / "check2.json").value is True
