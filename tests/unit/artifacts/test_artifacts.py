"""The typed JSON artifacts read files in the layout the stages wrote before they were typed, and write
them back byte for byte; the gates and the tasks read them through the models."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isnetflow.artifacts import ArtifactError
from isnetflow.artifacts.evaluation import EVALUATION_FILE, EvaluationReport
from isnetflow.artifacts.training import TRAIN_SUMMARY_FILE, TrainSummary
from isnetflow.artifacts.validation import IngestSummary, ValidationSummary
from isnetflow.evaluation.gates import BaselineReference, evaluate_gates, summary_values
from tests._configs import GATE_POLICY

# A train stage's train_summary.json as the stage wrote it before the summary was typed (the stage then
# spelled each key out and wrote ``json.dumps(summary, indent=2)``).
OLD_TRAIN_SUMMARY: dict[str, Any] = {
    "mode": "isnet", "run_id": "7042", "model_uri": "runs:/7042/model", "logged_model_uri": "models:/m-a96c",
    "best_epoch": 1, "best_val_auc": 0.1428571428571429, "C1": 1.0, "C2": 1000.0, "global_steps": 3,
    "wall_seconds": 0.43, "device": "cpu", "processes": 1,
    "splits": {"train": 9, "val": 11, "test": 4, "external": 24}, "splits_file": "splits.csv",
    "splits_sha256": "e40b", "val_fraction": 0.3, "test_fraction": 0.2, "seed": 0,
    "classes": ["normal", "covid"], "image_size": 48, "model": "cnn-small",
    "local_model": "/run/train-isnet/model.pt", "tracking_outages": 0,
}  # fmt: skip

_METRICS = {
    "n": 24, "n_positive": 12, "auc": 0.5625, "f1": 0.6666666666666666, "sensitivity": 1.0,
    "specificity": 0.0, "balanced_accuracy": 0.5, "brier": 0.265331998159337, "ece": 0.15697119385004044,
    "threshold": 0.35822004079818726, "n_patients": 20, "auc_ci_low": 0.2722083333333334,
    "auc_ci_high": 0.7868181818181817, "auc_ci_level": 0.95, "auc_ci_replicates": 50,
}  # fmt: skip
_UNDEFINED = {k: (None if isinstance(v, float) else 0) for k, v in _METRICS.items()} | {"auc_ci_level": 0.95}

# An evaluate stage's evaluation.json before the report was typed (trimmed from a real one; its settings
# in the flat audit keys of that version).
OLD_EVALUATION: dict[str, Any] = {
    "schema_version": 1,
    "generator": "isnetflow 0.1.0",
    "model": {"uri": "runs:/0123/model", "run_id": "0123", "mode": "isnet", "architecture": "cnn-small",
              "image_size": 48, "classes": ["normal", "covid"], "score": "1 - P(normal)"},
    "data": {"validated": "/data/validated", "masks": "/data/masks", "manifest_sha256": "a" * 64,
             "data_fingerprint": "b" * 64, "n_images": 48,
             "splits": {"train": 9, "val": 11, "test": 4, "external": 24}, "split_recomputed": False,
             "splits_file": "runs:/0123/splits.csv", "splits_sha256": "c" * 64, "split_seed": 0,
             "val_fraction": 0.3, "test_fraction": 0.2, "split_source": "run"},
    "threshold": {"value": 0.35822004079818726, "method": "youden_j_internal_val", "n": 11},
    "splits": {"internal_test": {**_METRICS, "auc": 0.98}, "external_pooled": _METRICS},
    "sites": {"Northfield": {"role": "internal", "split": "test", **_UNDEFINED},
              "Harbor Point": {"role": "external", "split": "external", **_METRICS}},
    "evaluated_sites": ["Northfield", "Harbor Point"],
    "gap": {"internal_minus_external_auc": 0.4175},
    "classification_metrics": {"external_pooled": {
        "roc": {"fpr": [0.0, 0.083, 1.0], "tpr": [0.0, 0.0, 1.0], "thresholds": [1.0, 0.4007, 0.1]},
        "confusion_matrix": {"categories": ["normal", "covid"], "matrix": [[0, 12], [0, 12]]}}},
    "audit": {
        "background_share": {"pooled": 0.757152489848055, "internal": 0.779821108381558,
                             "external": 0.7420400774923864, "per_site": {"Harbor Point": 0.854445178333519},
                             "background_area": 0.8680989146232605, "n_images": 10,
                             "composite": "epsilon_gamma_box", "canonizer": "GraphMergeBatchNorm",
                             "target": "label"},
        "counterfactual": {"flip_rate": 0.1, "mean_abs_score_change": 0.01840274631977081, "n_pairs": 20,
                           "threshold": 0.35822004079818726, "pairing": "opposite_label",
                           "construction": "recipient pixels inside the union of both lung masks",
                           "per_site": {"Harbor Point": {"flip_rate": 0.0, "mean_abs_score_change": 0.0147,
                                                         "n_pairs": 6}}}},
    "wall_seconds": 0.61,
    "config": {"n_boot": 50, "audit_per_site": 2, "audit_composite": "epsilon_gamma_box",
               "audit_epsilon": 1e-06, "audit_gamma": 0.25, "audit_target": "label"},
    "figures": {"roc": "figures/roc.png", "reliability": "figures/reliability.png"},
    "evaluation_run_id": "4567",
}  # fmt: skip


def _old_file(path: Path, content: dict[str, Any], **dumps: Any) -> str:
    """Write ``content`` as the stages wrote it (``json.dumps(indent=2)``); returns the text."""
    text = json.dumps(content, indent=2, **dumps)
    path.write_text(text)
    return text


def test_an_old_train_summary_loads_and_is_written_back_unchanged(tmp_path: Path) -> None:
    text = _old_file(tmp_path / TRAIN_SUMMARY_FILE, OLD_TRAIN_SUMMARY)
    summary = TrainSummary.read_from(tmp_path)
    assert (summary.mode, summary.model_uri, summary.C1) == ("isnet", "runs:/7042/model", 1.0)
    assert summary.best_val_auc == 0.1428571428571429 and summary.trainjob is None
    assert summary.classes == ["normal", "covid"] and summary.splits == OLD_TRAIN_SUMMARY["splits"]
    (tmp_path / "again").mkdir()
    assert summary.write_to(tmp_path / "again").read_text() == text


def test_an_older_summary_lacks_fields_and_a_newer_one_has_more(tmp_path: Path) -> None:
    """Files of older versions miss keys (``None``); keys this version does not know are kept."""
    oldest = {"image_size": 32, "classes": ["normal", "covid"], "run_id": "abc"}
    _old_file(tmp_path / TRAIN_SUMMARY_FILE, oldest)
    summary = TrainSummary.read_from(tmp_path)
    assert summary.seed is None and summary.val_fraction is None and summary.model_uri is None
    assert summary.as_json() == {"run_id": "abc", "classes": ["normal", "covid"], "image_size": 32}
    newer = {**OLD_TRAIN_SUMMARY, "trainjob": {"name": "tj", "nodes": 2}, "from_the_future": [1, 2]}
    text = _old_file(tmp_path / TRAIN_SUMMARY_FILE, newer)
    summary = TrainSummary.read_from(tmp_path)
    assert summary.trainjob is not None and summary.trainjob.nodes == 2
    assert summary.write(tmp_path / "back.json").read_text() == text


def test_an_old_evaluation_loads_and_is_written_back_unchanged(tmp_path: Path) -> None:
    text = _old_file(tmp_path / EVALUATION_FILE, OLD_EVALUATION)
    report = EvaluationReport.read_from(tmp_path)
    assert report.mode == "isnet" and report.internal_test.auc == 0.98
    assert report.external_pooled.auc_ci_low == pytest.approx(0.2722083333333334)
    assert report.background_share == pytest.approx(0.757152489848055) and report.flip_rate == 0.1
    assert report.external_site_aucs() == {"Harbor Point": 0.5625}
    assert report.sites is not None and report.sites["Northfield"].auc is None
    assert report.config is not None and report.config["audit_composite"] == "epsilon_gamma_box"  # as written
    assert report.number("gap.internal_minus_external_auc") == pytest.approx(0.4175)
    assert report.number("config.audit_composite") is None and report.number("nowhere.at.all") is None
    (tmp_path / "again").mkdir()
    assert report.write_to(tmp_path / "again").read_text() == text


def test_not_a_number_is_written_as_null(tmp_path: Path) -> None:
    payload = {"splits": {"external_pooled": {"auc": float("nan"), "n": np.int64(3)}}, "gap": {}}
    report = EvaluationReport.of(payload)
    assert report.external_pooled.auc is not None and math.isnan(report.external_pooled.auc)
    assert json.loads(report.write(tmp_path / "e.json").read_text()) == {
        "splits": {"external_pooled": {"auc": None, "n": 3}},
        "gap": {},
    }


def test_reading_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=rf"{tmp_path}/evaluation.json: cannot read the evaluation"):
        EvaluationReport.read_from(tmp_path)
    (tmp_path / "e.json").write_text(json.dumps({"model": {"mode": "isnet"}}))
    with pytest.raises(ArtifactError, match="not an isnetflow evaluation"):
        EvaluationReport.read_from(tmp_path / "e.json")
    (tmp_path / "t.json").write_text(json.dumps({"best_epoch": "first"}))
    with pytest.raises(ArtifactError, match=r"t\.json: cannot read the training summary"):
        TrainSummary.read(tmp_path / "t.json")


def test_the_gates_read_the_typed_report_as_they_read_the_file(tmp_path: Path) -> None:
    _old_file(tmp_path / EVALUATION_FILE, OLD_EVALUATION)
    report = EvaluationReport.read_from(tmp_path)
    typed, mapped = evaluate_gates(report, GATE_POLICY), evaluate_gates(OLD_EVALUATION, GATE_POLICY)
    assert typed == mapped
    by_name = {g.name: g for g in typed}
    assert by_name["background_share"].value == pytest.approx(0.757152489848055)
    assert by_name["min_site_auc"].value == 0.5625 and "Harbor Point" in by_name["min_site_auc"].detail
    assert by_name["auc_gap"].value == pytest.approx(0.98 - 0.5625)
    assert summary_values(report) == {"background_relevance": report.background_share,
                                      "counterfactual_flip_rate": 0.1}  # fmt: skip
    baseline = BaselineReference.from_payload(report)
    assert (baseline.model_uri, baseline.run_id) == ("runs:/0123/model", "0123")
    assert baseline.external_auc == 0.5625
    assert baseline.evaluated_sites == ("Northfield", "Harbor Point") and baseline.manifest_sha256 == "a" * 64


OLD_VALIDATION: dict[str, Any] = {
    "generator": "isnetflow 0.1.0", "input": "/data/dicom", "labels": "/data/labels.csv", "out": "/v",
    "files": 3, "counts": {"valid": 2, "quarantined": 1, "ignored": 0}, "not_images": 0,
    "pass_rate": 0.666667, "min_pass_rate": 0.5, "reasons": {"not_dicom": 1},
    "reason_messages": {"not DICOM": 1}, "ignored_reasons": {}, "warnings": {},
    "sites": {"A": {"role": "internal", "files": 3, "valid": 2, "quarantined": 1, "patients": 2,
                    "classes": {"covid": 1, "normal": 1}, "photometric": ["MONOCHROME2"]}},
    "class_balance": {"min_class_fraction": 0.1, "confound": "warn",
                      "sites": {"A": {"role": "internal", "valid": 2, "classes": {"covid": 1, "normal": 1},
                                      "fractions": {"normal": 0.5, "covid": 0.5}, "confounded": False}},
                      "confounded": {}, "line": None},
    "patient_leakage": {},
    "expectations": {"success": True, "statistics": {"evaluated_expectations": 17, "success_percent": 100.0},
                     "results": [{"expectation": "expect_table_row_count_to_be_between", "observed": 2}]},
    "images": {"dir": "images", "size": 64, "format": "npy"},
    "passed": True, "failure": None, "wall_seconds": 1.2, "per_file_seconds": 0.4,
    "config": {"image_size": 64},
}  # fmt: skip


def test_old_validation_and_ingest_summaries_load_and_are_written_back_unchanged(tmp_path: Path) -> None:
    text = _old_file(tmp_path / "validation.json", OLD_VALIDATION, default=str)
    summary = ValidationSummary.read_from(tmp_path)
    assert summary.count("valid") == 2 and summary.count("ignored") == 0 and summary.passed is True
    assert summary.expectations is not None and summary.expectations.statistics == {
        "evaluated_expectations": 17, "success_percent": 100.0}  # fmt: skip
    assert summary.write(tmp_path / "again.json").read_text() == text
    ingest = {"data_fingerprint": "f" * 64, "source": "/data/dicom", "labels": "/data/labels.csv",
              "validated": "validated", "provided_masks": None, "cohort_preview": None,
              "internal_sites": ["A"], "external_sites": [], "validation": OLD_VALIDATION, "passed": True,
              "reason": None}  # fmt: skip
    text = _old_file(tmp_path / "ingest.json", ingest, default=str)
    read = IngestSummary.read_from(tmp_path)
    assert read.validation is not None and read.validation.files == 3 and read.internal_sites == ["A"]
    (tmp_path / "again").mkdir()
    assert read.write_to(tmp_path / "again").read_text() == text
