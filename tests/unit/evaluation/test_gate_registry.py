"""The gate registry: entries match the policy; tags, flat metrics, report and run summary follow it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from isnetflow.config import PromotionPolicy
from isnetflow.evaluation import keys
from isnetflow.evaluation.gates import (
    GATE_NAMES,
    GATES,
    Gate,
    evaluate_gates,
    evaluation_tags,
    summary_values,
)
from isnetflow.evaluation.report import flat_metrics, render_html
from isnetflow.reporting import render_run_summary

EVALUATION: dict[str, Any] = {
    "threshold": {"value": 0.42, "method": "youden_j_internal_val", "n": 10},
    "splits": {
        "internal_test": {"auc": 0.90, "n": 20},
        "external_pooled": {"auc": 0.85, "auc_ci_low": 0.78, "auc_ci_high": 0.91, "n": 30},
    },
    "sites": {
        "Int": {"role": "internal", "auc": 0.95},
        "ExA": {"role": "external", "auc": 0.83},
        "ExC": {"role": "external", "auc": None},
    },
    "gap": {"internal_minus_external_auc": 0.05},
    "audit": {"background_share": {"pooled": 0.2}, "counterfactual": {"flip_rate": 0.03}},
    "evaluated_sites": ["Int", "ExA", "ExC"],
    "data": {"manifest_sha256": "abc", "validated": None},
}


def test_every_gate_has_a_policy_threshold_and_every_threshold_a_gate() -> None:
    assert tuple(GATES) == GATE_NAMES
    assert all(name == g.name for name, g in GATES.items())
    fields = set(PromotionPolicy.model_fields)
    assert {g.policy_field for g in GATES.values()} <= fields
    thresholds = {f for f in fields if f.startswith(("min_", "max_"))}
    assert thresholds == {g.policy_field for g in GATES.values()}
    for g in GATES.values():
        assert g.comparison in (">=", "<=") and g.description


def test_keys_read_and_write_paths() -> None:
    ev = copy.deepcopy(EVALUATION)
    assert keys.get(ev, keys.EXTERNAL_AUC_CI_LOW) == 0.78
    assert keys.get(ev, "splits.nowhere.auc") is None
    assert keys.number(ev, keys.THRESHOLD) == 0.42
    ev["audit"]["counterfactual"]["flip_rate"] = float("nan")
    assert keys.number(ev, keys.FLIP_RATE) is None
    per_site = {"sites.Int.auc": 0.95, "sites.ExA.auc": 0.83, "sites.ExC.auc": None}
    assert keys.expand(ev, keys.SITE_AUC) == per_site
    assert keys.external_site_aucs(ev) == {"ExA": 0.83, "ExC": None}
    keys.put(ev, "gap.new.value", 1.0)
    assert ev["gap"] == {"internal_minus_external_auc": 0.05, "new": {"value": 1.0}}


def test_evaluation_tags_are_unchanged() -> None:
    from isnetflow.stages.promote import _evaluation_tags

    tags = _evaluation_tags(EVALUATION)
    before_registry = {
        "eval.internal_test.auc": "0.9",
        "eval.external_pooled.auc": "0.85",
        "eval.external_pooled.auc_ci_low": "0.78",
        "eval.background_share": "0.2",
        "eval.flip_rate": "0.03",
        "eval.threshold": "0.42",
        "eval.site_auc": json.dumps({"Int": 0.95, "ExA": 0.83, "ExC": None}),
        "eval.evaluated_sites": json.dumps(["Int", "ExA", "ExC"]),
        "eval.data_manifest_sha256": "abc",
    }
    assert before_registry.items() <= tags.items()
    assert set(tags) == set(before_registry) | {g.eval_tag for g in GATES.values() if g.eval_tag}
    assert list(tags)[:5] == [
        "eval.internal_test.auc",
        "eval.external_pooled.auc",
        "eval.external_pooled.auc_ci_low",
        "eval.background_share",
        "eval.flip_rate",
    ]
    no_audit = {k: v for k, v in EVALUATION.items() if k != "audit"}
    assert evaluation_tags(no_audit)["eval.flip_rate"] == ""


def test_a_new_gate_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checks, tags, flat metrics, report headline and run summary all pick up a registered gate."""
    gate = Gate(
        "worst_site_gap",
        "gap.internal_minus_min_site_auc",
        "<=",
        "max_auc_gap",  # any policy field: the gate reads its threshold from there
        "internal test AUC - lowest external site AUC",
        eval_tag="eval.worst_site_gap",
        summary=("worst_site_gap", "worst site gap"),
    )
    monkeypatch.setitem(GATES, gate.name, gate)
    ev = copy.deepcopy(EVALUATION)
    keys.put(ev, gate.metric, 0.07)

    results = {r.name: r for r in evaluate_gates(ev, PromotionPolicy(max_auc_gap=0.05))}
    assert not results["worst_site_gap"].passed and results["worst_site_gap"].value == pytest.approx(0.07)
    assert results["worst_site_gap"].threshold == pytest.approx(0.05)
    assert evaluation_tags(ev)["eval.worst_site_gap"] == "0.07"
    assert flat_metrics(ev)["gap.internal_minus_min_site_auc"] == pytest.approx(0.07)
    assert "internal test AUC - lowest external site AUC</td><td>0.070" in render_html(ev, [])
    assert summary_values(ev)["worst_site_gap"] == pytest.approx(0.07)
    models = {"isnet": {"internal_auc": 0.9, **summary_values(ev), "gates": {"worst_site_gap": False}}}
    text = render_run_summary({"models": models})
    assert any("worst site gap" in ln and "0.070" in ln for ln in text.splitlines())
    assert any("gate: worst_site_gap" in ln and "FAIL" in ln for ln in text.splitlines())


def test_flat_metrics_and_summary_cover_the_gate_metrics() -> None:
    flat = flat_metrics(EVALUATION)
    for g in GATES.values():
        for key, value in keys.expand(EVALUATION, g.metric).items():
            assert value is None or key in flat, key
    summary = summary_values(EVALUATION)
    assert {"background_relevance": 0.2, "counterfactual_flip_rate": 0.03}.items() <= summary.items()
    assert set(summary) == {g.summary[0] for g in GATES.values() if g.summary}
