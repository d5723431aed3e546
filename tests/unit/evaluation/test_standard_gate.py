"""The do-no-harm gate ``standard_auc_delta`` on crafted evaluations: the ISNet against the standard model
trained beside it in the same run (its pooled external AUC may be at most the policy's margin lower)."""

from __future__ import annotations

import copy
import html
from typing import Any

import pytest

from isnetflow.config import PromotionPolicy
from isnetflow.evaluation import keys
from isnetflow.evaluation.gates import (
    GATES,
    STANDARD_GATE,
    BaselineReference,
    Gate,
    GateResult,
    all_passed,
    evaluate_gates,
    standard_line,
)
from isnetflow.evaluation.report import render_html, with_gates
from isnetflow.reporting import render_run_summary
from tests._configs import GATE_POLICY

POLICY = GATE_POLICY


def _passing_the_other_gates(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with every registered gate but the do-no-harm one that it does not pass under
    :data:`POLICY` given its threshold (comparisons are inclusive) at its metric key, where that makes it
    pass: a gate added to the registry needs no edit here."""
    for gate in GATES.values():
        if gate.name == STANDARD_GATE or "*" in gate.metric or gate.evaluate(payload, POLICY).passed:
            continue
        trial = copy.deepcopy(payload)
        keys.put(trial, gate.metric, gate.threshold(POLICY))
        if gate.evaluate(trial, POLICY).passed:
            payload = trial
    return payload


def _evaluation(mode: str, external_auc: float | None, **model: Any) -> dict[str, Any]:
    """An evaluate-stage payload with this pooled external AUC (internal AUC = external + 0.02, every
    external site above the lowest allowed) that passes every other gate (:func:`_passing_the_other_gates`).
    """
    internal = None if external_auc is None else min(1.0, external_auc + 0.02)
    return _passing_the_other_gates(
        {
            "model": {"uri": f"runs:/{mode}-run/model", "run_id": f"{mode}-run", "mode": mode, **model},
            "data": {"manifest_sha256": "m" * 64},
            "evaluated_sites": ["Int", "ExA", "ExB"],
            "splits": {"internal_test": {"auc": internal}, "external_pooled": {"auc": external_auc}},
            "sites": {
                "Int": {"role": "internal", "auc": 0.95},
                "ExA": {"role": "external", "auc": 0.80},
                "ExB": {"role": "external", "auc": 0.84},
            },
        }
    )


STANDARD = _evaluation("standard", 0.85)


def _gate(isnet_auc: float | None, policy: PromotionPolicy = POLICY, **baseline: Any) -> GateResult:
    standard = copy.deepcopy(STANDARD)
    standard["splits"]["external_pooled"]["auc"] = baseline.pop("auc", 0.85)
    ref = BaselineReference.from_payload(standard, **baseline)
    results = evaluate_gates(_evaluation("isnet", isnet_auc), policy, None, baseline=ref)
    (gate,) = [r for r in results if r.name == STANDARD_GATE]
    return gate


def test_refuses_an_isnet_more_than_the_margin_below_the_standard_model() -> None:
    results = evaluate_gates(
        _evaluation("isnet", 0.79), POLICY, baseline=BaselineReference.from_payload(STANDARD)
    )
    assert [r.name for r in results if not r.passed] == [STANDARD_GATE]  # the only gate that refuses
    assert not all_passed(results)
    g = {r.name: r for r in results}[STANDARD_GATE]
    assert g.value == pytest.approx(-0.06) and g.threshold == pytest.approx(-0.05) and g.comparison == ">="
    assert g.detail == (
        "ISNet external AUC 0.790 is 0.060 below the standard model's 0.850 of this run "
        "(allowed drop 0.050): refused"
    )


@pytest.mark.parametrize(
    ("isnet_auc", "words"),
    [
        (0.81, "is 0.040 below the standard model's 0.850"),
        (0.80, "is 0.050 below the standard model's 0.850"),  # the margin itself: inclusive
        (0.85, "equals the standard model's 0.850"),
        (0.90, "is 0.050 above the standard model's 0.850"),
    ],
)
def test_passes_within_the_margin_and_above(isnet_auc: float, words: str) -> None:
    g = _gate(isnet_auc)
    assert g.passed and g.value == pytest.approx(isnet_auc - 0.85)
    assert g.detail == f"ISNet external AUC {isnet_auc:.3f} {words} of this run (allowed drop 0.050): passed"


def test_a_gate_added_to_the_registry_needs_no_edit_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crafted payloads pass a new gate too, and the do-no-harm result is found by name wherever the
    registry puts it."""
    added = Gate("added_gate", "audit.added.value", "<=", "max_flip_rate", "a gate registered later")
    monkeypatch.setitem(GATES, added.name, added)
    results = evaluate_gates(
        _evaluation("isnet", 0.79), POLICY, baseline=BaselineReference.from_payload(STANDARD)
    )
    assert [r.name for r in results][-2:] == [STANDARD_GATE, added.name]
    assert [r.name for r in results if not r.passed] == [STANDARD_GATE]
    assert _gate(0.81).passed and not _gate(0.79).passed


def test_the_margin_is_inclusive_despite_float_noise() -> None:
    assert 0.75 - 0.80 < -0.05  # what a plain comparison would refuse
    assert _gate(0.75, auc=0.80).passed


def test_disabled_by_policy_passes_and_still_says_how_far_apart() -> None:
    off = POLICY.model_copy(update={"max_auc_drop_vs_standard": None})
    g = _gate(0.60, off)
    assert g.passed and g.comparison == "disabled" and g.threshold is None
    assert g.value == pytest.approx(-0.25)
    assert g.detail.endswith("(gate disabled)") and "0.250 below" in g.detail
    assert g.tags()[f"gate.{STANDARD_GATE}.threshold"] == "disabled"
    alone = {r.name: r for r in evaluate_gates(_evaluation("isnet", 0.6), off)}[STANDARD_GATE]
    assert alone.passed and alone.detail == "disabled by policy"


def test_without_a_baseline_the_gate_is_not_applicable() -> None:
    """A standalone ``isnetflow promote`` trained no standard model: recorded as not applicable (pass)."""
    g = {r.name: r for r in evaluate_gates(_evaluation("isnet", 0.60), POLICY)}[STANDARD_GATE]
    assert g.passed and g.value is None and g.threshold == pytest.approx(-0.05)
    assert g.detail == "not applicable: no standard model was trained beside this candidate"
    tags = g.tags()
    assert tags[f"gate.{STANDARD_GATE}.value"] == "" and tags[f"gate.{STANDARD_GATE}.passed"] == "true"
    assert tags[f"gate.{STANDARD_GATE}.detail"].startswith("not applicable")


def test_the_standard_model_is_never_compared_with_itself() -> None:
    # the pipeline's check of the standard model: no baseline, and it knows why
    own = {r.name: r for r in evaluate_gates(STANDARD, POLICY)}[STANDARD_GATE]
    assert own.passed and own.detail == "not applicable: this is the standard model, the baseline itself"
    # handed its own evaluation as the baseline: the same model, not a comparison
    itself = BaselineReference.from_payload(STANDARD)
    g = {r.name: r for r in evaluate_gates(STANDARD, POLICY, baseline=itself)}[STANDARD_GATE]
    assert g.passed and g.value is None and "the standard model itself" in g.detail


def test_fails_closed_when_it_cannot_compare() -> None:
    g = _gate(0.85, auc=None)  # e.g. a single-class external set
    assert not g.passed and g.value is None
    assert g.detail == "cannot compare with the standard model: the standard model's external AUC missing"
    g = _gate(None)
    assert not g.passed and "ISNet's external AUC missing" in g.detail
    other = copy.deepcopy(STANDARD)
    other["data"]["manifest_sha256"] = "x" * 64
    g = {
        r.name: r
        for r in evaluate_gates(
            _evaluation("isnet", 0.9), POLICY, baseline=BaselineReference.from_payload(other)
        )
    }[STANDARD_GATE]
    assert not g.passed and "other data (manifest xxxxxxxxxxxx" in g.detail
    other = copy.deepcopy(STANDARD)
    other["evaluated_sites"] = ["Int", "ExA"]
    ref = BaselineReference.from_payload(other)
    g = {r.name: r for r in evaluate_gates(_evaluation("isnet", 0.9), POLICY, baseline=ref)}[STANDARD_GATE]
    assert not g.passed and "other data (sites" in g.detail


def test_baseline_from_a_stage_payload_and_from_a_bare_core_payload() -> None:
    ref = BaselineReference.from_payload(STANDARD)
    assert ref == BaselineReference(
        external_auc=0.85,
        name="standard",
        model_uri="runs:/standard-run/model",
        run_id="standard-run",
        manifest_sha256="m" * 64,
        evaluated_sites=("Int", "ExA", "ExB"),
    )
    # evaluation.core.evaluate_model's payload (the bench): no model, no data; the gate still compares
    core = {k: v for k, v in STANDARD.items() if k not in ("model", "data")}
    bare = BaselineReference.from_payload(core, name="standard")
    assert bare.model_uri == "" and bare.manifest_sha256 == "" and bare.external_auc == 0.85
    isnet = {k: v for k, v in _evaluation("isnet", 0.70).items() if k not in ("model", "data")}
    g = {r.name: r for r in evaluate_gates(isnet, POLICY, None, baseline=bare)}[STANDARD_GATE]
    assert not g.passed and g.detail.startswith("candidate external AUC 0.700 is 0.150 below")


def test_registry_tags() -> None:
    tags = _gate(0.79).tags()
    assert tags == {
        "gate.standard_auc_delta.value": "-0.06",
        "gate.standard_auc_delta.threshold": "-0.05",
        "gate.standard_auc_delta.passed": "false",
        "gate.standard_auc_delta.detail": "ISNet external AUC 0.790 is 0.060 below the standard model's "
        "0.850 of this run (allowed drop 0.050): refused",
    }


def test_the_reports_say_it_in_one_line() -> None:
    isnet = _evaluation("isnet", 0.71)
    standard = copy.deepcopy(STANDARD)
    standard["splits"]["external_pooled"]["auc"] = 0.83
    results = evaluate_gates(isnet, POLICY, baseline=BaselineReference.from_payload(standard))
    line = (
        "ISNet external AUC 0.710 is 0.120 below the standard model's 0.830 of this run "
        "(allowed drop 0.050): refused"
    )
    assert standard_line(results) == line
    assert standard_line([r.as_dict() for r in results]) == line  # as gates.json holds them
    assert standard_line([]) is None

    page = with_gates(
        render_html(isnet, [], title="Evaluation of runs:/isnet-run/model"), [r.as_dict() for r in results]
    )
    shown = html.escape(line)
    assert page.count(shown) == 2  # the line above the gate table, and the gate's detail in it
    assert "<b>Do no harm:</b> " + shown in page
    assert page.index("Promotion gates") < page.index("<h3>Headline</h3>")
    assert "standard_auc_delta</td><td>-0.120</td><td>&gt;= -0.050</td><td>FAIL" in page

    summary = {
        "models": {
            "isnet": {
                "gates": {r.name: r.passed for r in results},
                "gates_passed": False,
                "standard_comparison": line,
            },
            "standard": {"gates": {STANDARD_GATE: True}, "standard_comparison": "not applicable"},
        }
    }
    text = render_run_summary(summary, width=200)
    assert [ln for ln in text.splitlines() if "of this run" in ln] == [f"do no harm: {line}"]
    assert any("gate: standard_auc_delta" in ln and "FAIL" in ln for ln in text.splitlines())
