"""The pipeline tasks (``isnetflow.tasks``) as plain functions: what each component hands its KFP outputs.

The compiled YAML and the kfp local run are covered in ``tests/pipelines``; here the logic runs without
kfp, on the tiny cohort and the tiny trained model.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from isnetflow import tasks
from isnetflow.config import Settings, SynthConfig, ValidateConfig
from isnetflow.evaluation import keys
from isnetflow.evaluation.gates import STANDARD_GATE, standard_line
from tests._configs import FAST_EVALUATE, Trained, strict_policy


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
    """The evaluate task evaluates, checks the gates without registering (``gates.json``, also added to the
    report) and, for the pipeline's candidate, records the refusal: the data check then skips training on
    the same data and recipe, naming the failed gates. The candidate's gate check compares it with the
    standard model's evaluation of the same run (the do-no-harm gate)."""
    settings = Settings(
        evaluate=FAST_EVALUATE,
        promote=strict_policy(registered_model="cxr-tasks", max_auc_drop_vs_standard=0.05),
    )
    settings_json = settings.model_dump_json()
    data = _data_artifact(tmp_path / "data", eval_trained.validated)
    masks = _masks_artifact(tmp_path / "masks", eval_trained.masks)
    uri = eval_trained.tracking_uri
    model_uri = eval_trained.summary["model_uri"]

    # not the candidate (the pipeline's standard model): evaluated and checked, no outcome recorded, and
    # its do-no-harm gate is not applicable (it is the baseline)
    other = strict_policy(registered_model="cxr-tasks-baseline")
    other_json = settings.model_copy(update={"promote": other}).model_dump_json()
    tasks.evaluate_model(other_json, uri, "", False, data, masks, model_uri, tmp_path / "std")
    assert tasks.data_changed(other_json, uri, True, data, tmp_path / "check2.json").value is True
    own = json.loads((tmp_path / "std" / tasks.GATES_FILE).read_text())["gates"]
    assert standard_line(own) == "not applicable: this is the standard model, the baseline itself"

    # the candidate without the standard model's evaluation: refused to check, not passed as n/a
    with pytest.raises(ValueError, match="do-no-harm gate"):
        tasks.evaluate_model(settings_json, uri, "", True, data, masks, model_uri, tmp_path / "ev")
    with pytest.raises(ValueError, match="cannot read the pipeline artifact"):
        tasks.evaluate_model(settings_json, uri, "", True, data, masks, model_uri, tmp_path / "ev", tmp_path)

    # a standard model of "another" training run, 0.1 better outside: the ISNet stand-in is refused
    standard = json.loads((tmp_path / "std" / keys.EVALUATION_FILE).read_text())
    standard["model"] |= {"uri": "runs:/standard-run/model", "run_id": "standard-run"}
    own_auc = standard[keys.SPLITS][keys.EXTERNAL_POOLED][keys.AUC]
    standard[keys.SPLITS][keys.EXTERNAL_POOLED][keys.AUC] = own_auc + 0.1
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / keys.EVALUATION_FILE).write_text(json.dumps(standard))
    out = tasks.evaluate_model(
        settings_json, uri, "", True, data, masks, model_uri, tmp_path / "ev", baseline=tmp_path / "baseline"
    )

    payload = json.loads((tmp_path / "ev" / keys.EVALUATION_FILE).read_text())
    gates = json.loads((tmp_path / "ev" / tasks.GATES_FILE).read_text())
    assert gates["decision"] == "dry-run" and gates["version"] is None  # nothing registered
    assert gates["baseline"]["model_uri"] == "runs:/standard-run/model"
    assert out.value is False is gates["all_gates_passed"]
    failed = [g["name"] for g in gates["gates"] if not g["passed"]]
    assert "external_auc_ci_low" in failed or "background_share" in failed
    assert STANDARD_GATE in failed
    line = standard_line(gates["gates"])
    assert line is not None and line.endswith("of this run (allowed drop 0.050): refused")
    assert "is 0.100 below the standard model's" in line
    assert out.metrics["auc_delta_vs_standard"] == pytest.approx(-0.1)
    assert out.metrics["external_pooled_auc"] == payload[keys.SPLITS][keys.EXTERNAL_POOLED][keys.AUC]
    assert out.metrics["internal_test_auc"] == payload[keys.SPLITS][keys.INTERNAL_TEST][keys.AUC]
    assert out.html == (tmp_path / "ev" / "report.html").read_text()
    assert html.escape(line) in out.html and "Promotion gates" in out.html
    assert out.roc is not None and len(out.roc["fpr"]) == len(out.roc["tpr"]) >= 2
    assert out.confusion is not None and len(out.confusion["matrix"]) == 2

    check = tasks.data_changed(settings_json, uri, True, data, tmp_path / "check.json")
    assert out.metadata == {} and check.value is False
    assert check.metadata["decision"] == "skip"
    assert "already refused" in check.metadata["reason"] and failed[0] in check.metadata["reason"]
    assert json.loads((tmp_path / "check.json").read_text())["refused_before"]["candidate_uri"] == model_uri
