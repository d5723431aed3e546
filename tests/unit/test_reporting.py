"""The end-of-run table of `isnetflow run`, rendered from a summary shaped like collect_summary's."""

from __future__ import annotations

import re
from typing import Any

from isnetflow.reporting import mlflow_ui_command, render_run_summary


def _summary() -> dict[str, Any]:
    gates_isnet = {
        "external_auc_ci_low": True,
        "auc_gap": False,
        "background_share": True,
        "counterfactual_flip_rate": False,
        "min_site_auc": True,
        "champion_auc_delta": True,
    }
    gates_std = dict.fromkeys(gates_isnet, False) | {"champion_auc_delta": True}
    return {
        "pipeline_root": "/w/.isnetflow/kfp/isnetflow-training-2026",
        "tracking_uri": "sqlite:////w/.isnetflow/mlflow.db",
        "data": {
            "source": "/w/cohort/dicom",
            "valid": 1200,
            "quarantined": 0,
            "validation_passed": True,
            "internal_sites": ["Alder", "Birch", "Cedar"],
            "external_sites": ["Lakeshore", "Mount Verity", "Harbor Point"],
        },
        "data_check": {"decision": "train", "reason": "no champion of cxr-isnet yet", "proceed": True},
        "models": {
            "isnet": {
                "model_uri": "runs:/abc/model",
                "internal_auc": 0.857,
                "external_auc": 0.756,
                "external_auc_ci": [0.717, 0.796],
                "background_relevance": 0.369,
                "counterfactual_flip_rate": 0.16,
                "gates_passed": False,
                "gates": gates_isnet,
                "ce_below_half_epoch": 12,
                "learned_early": True,
                "report": "/w/isnet/report.html",
            },
            "standard": {
                "model_uri": "runs:/def/model",
                "internal_auc": 0.997,
                "external_auc": 0.699,
                "external_auc_ci": [0.653, 0.740],
                "background_relevance": 0.839,
                "counterfactual_flip_rate": 0.525,
                "gates_passed": False,
                "gates": gates_std,
                "ce_below_half_epoch": 1,
                "learned_early": None,
                "report": "/w/standard/report.html",
            },
        },
        "promotion": {
            "decision": "rejected",
            "model_uri": None,
            "candidate": "isnet",
            "reason": "gates failed: auc_gap, counterfactual_flip_rate",
        },
        "wall_seconds": 295.0,
    }


def _cells(text: str, label: str) -> list[str]:
    """The cells after ``label`` on its table row."""
    line = next(ln for ln in text.splitlines() if f" {label} " in ln)
    return [c.strip() for c in re.split(r"[│|]", line.split(label, 1)[1]) if c.strip()]


def test_table_compares_the_two_models_with_gates_decision_and_ui_command() -> None:
    text = render_run_summary(_summary(), mlflow="/w/.venv/bin/mlflow")
    header = next(ln for ln in text.splitlines() if "ISNet" in ln and "standard" in ln and "vs" not in ln)
    assert header.index("ISNet") < header.index("standard")
    assert _cells(text, "internal test AUC") == ["0.857", "0.997"]
    assert _cells(text, "external pooled AUC (95% CI)") == ["0.756 (0.717–0.796)", "0.699 (0.653–0.740)"]
    assert _cells(text, "training CE < 0.5 from epoch") == ["12 (early)", "1"]
    assert _cells(text, "background relevance share") == ["0.369", "0.839"]
    assert _cells(text, "counterfactual flip rate") == ["0.160", "0.525"]
    assert _cells(text, "gate: auc_gap") == ["FAIL", "FAIL"]
    assert _cells(text, "gate: external_auc_ci_low") == ["pass", "FAIL"]
    assert _cells(text, "gate: champion_auc_delta") == ["pass", "pass"]
    assert _cells(text, "all gates passed") == ["FAIL", "FAIL"]
    assert "promotion: rejected (gates failed: auc_gap, counterfactual_flip_rate)" in text
    assert "ISNet model (not registered): runs:/abc/model" in text
    assert "MLflow UI: /w/.venv/bin/mlflow ui --backend-store-uri sqlite:////w/.isnetflow/mlflow.db" in text
    assert "data check: train (no champion of cxr-isnet yet)" in text
    assert "1200 valid, 0 quarantined (validation passed)" in text


def test_promoted_and_skipped_runs() -> None:
    s = _summary()
    s["promotion"] = {"decision": "promoted", "model_uri": "models:/cxr-isnet/3", "reason": "all passed"}
    text = render_run_summary(s)
    assert "promotion: promoted (all passed)" in text
    assert "registered model: models:/cxr-isnet/3" in text
    skipped = _summary() | {
        "models": {},
        "data_check": {"decision": "skip", "reason": "data unchanged since champion v3", "proceed": False},
        "promotion": {"decision": "skipped", "model_uri": None, "reason": "no training: unchanged"},
    }
    text = render_run_summary(skipped)
    assert "no model was trained in this run" in text and "internal test AUC" not in text
    assert "data check: skip (data unchanged since champion v3)" in text
    assert "promotion: skipped (no training: unchanged)" in text


def test_mlflow_ui_command() -> None:
    uri = "sqlite:////a b/mlflow.db"
    assert mlflow_ui_command(uri) == "mlflow ui --backend-store-uri 'sqlite:////a b/mlflow.db'"
    assert mlflow_ui_command("http://mlflow:5000") == "open http://mlflow:5000 in a browser"
    assert mlflow_ui_command(None, "/v/bin/mlflow") == "/v/bin/mlflow ui"


def test_when_each_model_learned() -> None:
    """The learning row: "never" for a model whose CE never fell; absent for summaries written before it."""
    s = _summary()
    s["models"]["isnet"] |= {"ce_below_half_epoch": 21, "learned_early": False}
    s["models"]["standard"] |= {"ce_below_half_epoch": None, "learned_early": None}
    assert _cells(render_run_summary(s), "training CE < 0.5 from epoch") == ["21", "never"]
    del s["models"]["standard"]["ce_below_half_epoch"]
    assert _cells(render_run_summary(s), "training CE < 0.5 from epoch") == ["21", "n/a"]
    for m in s["models"].values():
        m.pop("ce_below_half_epoch", None)
    assert "training CE < 0.5" not in render_run_summary(s)
