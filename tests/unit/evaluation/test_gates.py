"""Gate pass/fail logic on hand-written evaluation payloads."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from isnetflow.evaluation.gates import GATE_NAMES, ChampionReference, all_passed, evaluate_gates
from tests._configs import GATE_POLICY

POLICY = GATE_POLICY

GOOD: dict[str, Any] = {
    "splits": {
        "internal_test": {"auc": 0.90},
        "external_pooled": {"auc": 0.85, "auc_ci_low": 0.78},
    },
    "sites": {
        "Int": {"role": "internal", "auc": 0.95},
        "ExA": {"role": "external", "auc": 0.83},
        "ExB": {"role": "external", "auc": 0.88},
        "ExC": {"role": "external", "auc": None},  # single class: skipped
    },
    "audit": {"background_share": {"pooled": 0.2}, "counterfactual": {"flip_rate": 0.03}},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    ev = copy.deepcopy(GOOD)
    cur = ev
    *head, last = path.split(".")
    for p in head:
        cur = cur[p]
    cur[last] = value
    return ev


def _by_name(results: list) -> dict:
    return {r.name: r for r in results}


def test_all_gates_pass_on_a_good_candidate_without_champion() -> None:
    results = evaluate_gates(GOOD, POLICY)
    assert [r.name for r in results] == list(GATE_NAMES)
    assert all_passed(results)
    g = _by_name(results)
    assert g["auc_gap"].value == pytest.approx(0.05)
    assert g["min_site_auc"].value == pytest.approx(0.83) and "ExA" in g["min_site_auc"].detail
    assert "ExC" in g["min_site_auc"].detail  # reported as skipped
    assert g["champion_auc_delta"].detail == "no champion yet"


@pytest.mark.parametrize(
    ("path", "value", "gate"),
    [
        ("splits.external_pooled.auc_ci_low", 0.69, "external_auc_ci_low"),
        ("splits.internal_test.auc", 0.96, "auc_gap"),  # gap 0.11 > 0.10
        ("audit.background_share.pooled", 0.41, "background_share"),
        ("audit.counterfactual.flip_rate", 0.11, "counterfactual_flip_rate"),
        ("sites.ExB.auc", 0.64, "min_site_auc"),
    ],
)
def test_each_gate_fails_alone(path: str, value: float, gate: str) -> None:
    results = evaluate_gates(_with(path, value), POLICY)
    failed = [r.name for r in results if not r.passed]
    assert failed == [gate]
    assert not all_passed(results)


def test_boundaries_are_inclusive() -> None:
    ev = _with("splits.external_pooled.auc_ci_low", 0.70)
    ev["audit"]["background_share"]["pooled"] = 0.40
    ev["audit"]["counterfactual"]["flip_rate"] = 0.10
    assert all_passed(evaluate_gates(ev, POLICY))


def test_missing_values_fail_closed_and_disabled_gates_pass() -> None:
    no_audit = copy.deepcopy(GOOD)
    del no_audit["audit"]
    g = _by_name(evaluate_gates(no_audit, POLICY))
    assert not g["background_share"].passed and "missing" in g["background_share"].detail
    assert not g["counterfactual_flip_rate"].passed
    relaxed = POLICY.model_copy(update={"max_background_share": None, "max_flip_rate": None})
    g = _by_name(evaluate_gates(no_audit, relaxed))
    assert g["background_share"].passed and g["background_share"].comparison == "disabled"
    assert g["background_share"].tags()["gate.background_share.threshold"] == "disabled"
    nan_auc = _with("splits.internal_test.auc", float("nan"))
    assert not _by_name(evaluate_gates(nan_auc, POLICY))["auc_gap"].passed


def test_min_site_auc_needs_an_external_site_with_both_classes() -> None:
    ev = copy.deepcopy(GOOD)
    ev["sites"] = {"Int": {"role": "internal", "auc": 0.99}}
    g = _by_name(evaluate_gates(ev, POLICY))["min_site_auc"]
    assert not g.passed and "no external site" in g.detail
    ev["sites"]["ExC"] = {"role": "external", "auc": None}
    g = _by_name(evaluate_gates(ev, POLICY))["min_site_auc"]
    assert not g.passed and "both classes" in g.detail


def test_champion_comparison() -> None:
    better = ChampionReference("3", 0.80, "evaluated")
    worse = ChampionReference("3", 0.87, "evaluated")
    slightly = ChampionReference("3", 0.855, "evaluated")
    assert _by_name(evaluate_gates(GOOD, POLICY, better))["champion_auc_delta"].value == pytest.approx(0.05)
    g = _by_name(evaluate_gates(GOOD, POLICY, worse))["champion_auc_delta"]
    assert not g.passed and g.value == pytest.approx(-0.02) and g.threshold == pytest.approx(-0.01)
    assert "v3" in g.detail
    assert _by_name(evaluate_gates(GOOD, POLICY, slightly))["champion_auc_delta"].passed  # within 0.01
    unknown = ChampionReference("3", None, "data unreadable")
    g = _by_name(evaluate_gates(GOOD, POLICY, unknown))["champion_auc_delta"]
    assert not g.passed and "data unreadable" in g.detail


def test_tags_have_one_set_per_gate() -> None:
    results = evaluate_gates(_with("audit.background_share.pooled", 0.5), POLICY)
    tags: dict[str, str] = {}
    for r in results:
        tags.update(r.tags())
    for name in GATE_NAMES:
        assert {f"gate.{name}.value", f"gate.{name}.threshold", f"gate.{name}.passed"} <= set(tags)
    assert tags["gate.background_share.value"] == "0.5"
    assert tags["gate.background_share.threshold"] == "0.4"
    assert tags["gate.background_share.passed"] == "false"
    assert tags["gate.champion_auc_delta.value"] == ""
