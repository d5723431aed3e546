"""Promotion gates: the gate registry :data:`GATES` and pure pass/fail logic on an evaluation and a policy.

An evaluation is read as the typed ``evaluation.json``
(:class:`~isnetflow.artifacts.evaluation.EvaluationReport`; a mapping, the file's content or an
in-memory payload, is read as one). Each gate is one :class:`Gate` entry in :data:`GATES`: its name (used
in the registry tags ``gate.<name>.value|threshold|passed``), the ``evaluation.json`` key of its value
(its flat MLflow metric key) and the reader taking the value from the report, the comparison
(inclusive), the :class:`~isnetflow.config.PromotionPolicy` field holding its threshold and a one-line
description. Everything else follows the registry: the
checks (:func:`evaluate_gates`), the ``eval.*`` model-version tags written at promotion
(:func:`evaluation_tags`), the flat metrics (:func:`isnetflow.evaluation.report.flat_metrics`), the
HTML report's headline and the run summary table (:func:`summary_values`,
:mod:`isnetflow.reporting`). A new gate is therefore its entry here, its threshold field in the policy,
its metric computed by the evaluation (:mod:`isnetflow.evaluation.core`, under a key of
:mod:`isnetflow.evaluation.keys`) and a test.

Three gates are more than a value and a threshold: ``min_site_auc`` takes the lowest AUC over the
external sites with both classes (it fails, naming why, when there is none); ``champion_auc_delta``
compares the pooled external AUC with the current champion's on the same data (threshold ``-max drop``;
no champion yet: passes); ``standard_auc_delta``, the *do-no-harm* gate, compares it with the standard
model trained beside the candidate in the same run (threshold ``-max_auc_drop_vs_standard``).

The do-no-harm gate and its baseline (:class:`BaselineReference`, built from the standard model's
evaluation with :meth:`BaselineReference.from_payload`):

* baseline given: value = candidate pooled external AUC - the standard model's, refused below
  ``-max_auc_drop_vs_standard``; its ``detail`` is the one line the reports print (:func:`standard_line`),
  e.g. "ISNet external AUC 0.710 is 0.120 below the standard model's 0.830 of this run (allowed drop
  0.050): refused";
* baseline given but either AUC missing (e.g. a single-class external set), or the two evaluations were
  made on different data (manifest hash or evaluated sites differ): *fails* closed, saying why;
* the standard model's own gate check (its evaluation records ``model.mode`` "standard" and it gets no
  baseline), or a baseline that is the candidate itself (same model URI or training run): not
  applicable, passes -- it is never compared with itself;
* no baseline (``isnetflow promote`` of a single model, which trained no standard model beside it): *not
  applicable*, passes, with ``detail`` saying so -- as ``champion_auc_delta`` passes with no champion:
  there is nothing of this run to compare with, and refusing every standalone promotion would only
  teach people to switch the gate off. The pipeline always passes its standard model's evaluation
  (:func:`isnetflow.tasks.evaluate_model` refuses to check an ISNet candidate without one while the gate
  is enabled), so there the gate cannot pass for lack of a baseline.

A gate whose threshold is ``None`` in the policy is *disabled* (recorded, counts as passed). A gate
whose value is missing or not finite *fails* (fail closed) with a reason in ``detail``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from isnetflow.artifacts import finite
from isnetflow.artifacts.evaluation import EvaluatedModel, EvaluationReport
from isnetflow.config import PromotionPolicy
from isnetflow.evaluation import keys

__all__ = [
    "GATES",
    "GATE_NAMES",
    "STANDARD_GATE",
    "BaselineReference",
    "ChampionReference",
    "Gate",
    "GateResult",
    "all_passed",
    "evaluate_gates",
    "evaluation_tags",
    "standard_line",
    "summary_values",
]

Comparison = Literal[">=", "<="]
#: an evaluation as the gates take it: the typed report, or its JSON mapping (read as the report)
Evaluation = EvaluationReport | Mapping[str, Any]


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome. ``passed`` is False for a missing value; ``disabled`` gates pass."""

    name: str
    value: float | None
    threshold: float | None
    comparison: Literal[">=", "<=", "disabled"]
    passed: bool
    detail: str = ""

    def tags(self) -> dict[str, str]:
        """``gate.<name>.value|threshold|passed`` (+ ``detail``) as registry tag strings."""
        fmt = lambda v: "" if v is None else f"{v:.6g}"  # noqa: E731
        tags = {
            f"gate.{self.name}.value": fmt(self.value),
            f"gate.{self.name}.threshold": (
                "disabled" if self.comparison == "disabled" else fmt(self.threshold)
            ),
            f"gate.{self.name}.passed": str(self.passed).lower(),
        }
        if self.detail:
            tags[f"gate.{self.name}.detail"] = self.detail[:500]
        return tags

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (as written to ``gates.json``)."""
        return asdict(self)


@dataclass(frozen=True)
class ChampionReference:
    """The current champion's pooled external AUC on the candidate's evaluation data."""

    version: str
    external_auc: float | None
    source: str  # e.g. "evaluated on <data>" or "recorded tags (same manifest)"


@dataclass(frozen=True)
class BaselineReference:
    """The standard (baseline) model trained beside the candidate in the same run: its pooled external AUC
    on the same data, and what identifies the model and the data (``""`` / ``None``: not recorded)."""

    external_auc: float | None
    name: str = "standard"
    model_uri: str = ""
    run_id: str = ""
    manifest_sha256: str = ""
    evaluated_sites: tuple[str, ...] | None = None

    @classmethod
    def from_payload(cls, evaluation: Evaluation, *, name: str = "standard") -> BaselineReference:
        """The baseline of an evaluation (the evaluate stage's ``evaluation.json``, or
        :func:`isnetflow.evaluation.core.evaluate_model`'s ``payload``, which records no model or data)."""
        ev = EvaluationReport.of(evaluation)
        model = ev.model or EvaluatedModel()
        return cls(
            external_auc=finite(ev.external_pooled.auc),
            name=name,
            model_uri=model.uri or "",
            run_id=model.run_id or "",
            manifest_sha256=_manifest(ev),
            evaluated_sites=None if ev.evaluated_sites is None else tuple(ev.evaluated_sites),
        )


@dataclass(frozen=True)
class GateReferences:
    """What a gate may compare the candidate with: the current champion and the run's standard model."""

    champion: ChampionReference | None = None
    baseline: BaselineReference | None = None


#: ``read(evaluation) -> (value, detail)``: a gate's value and what explains it (or why it is missing).
GateReader = Callable[[EvaluationReport], tuple[float | None, str]]
#: ``check(gate, evaluation, policy, references)``: a gate that needs more than its value and threshold.
GateCheck = Callable[["Gate", EvaluationReport, PromotionPolicy, GateReferences], GateResult]


@dataclass(frozen=True)
class Gate:
    """A registered promotion gate.

    ``metric`` is the ``evaluation.json`` key (dotted, ``*`` = every site) the value comes from and its
    flat metric key; ``read`` takes the value from the typed report (without one: the number at
    ``metric``, :meth:`~isnetflow.artifacts.evaluation.EvaluationReport.number`);
    ``check`` replaces the plain comparison of value and threshold (the champion and do-no-harm gates,
    given the champion and the baseline as :class:`GateReferences`). ``eval_tag``
    names the ``eval.*`` model-version tag recording the value at promotion and ``summary`` the run
    summary's ``(key, table row label)`` showing it (``None``: not recorded there).
    """

    name: str
    metric: str
    comparison: Comparison
    policy_field: str
    description: str
    read: GateReader | None = None
    check: GateCheck | None = None
    eval_tag: str | None = None
    summary: tuple[str, str] | None = None

    def threshold(self, policy: PromotionPolicy) -> float | None:
        """The policy's threshold (``None``: disabled)."""
        value: float | None = getattr(policy, self.policy_field)
        return value

    def value(self, evaluation: Evaluation) -> tuple[float | None, str]:
        """The gate's value in ``evaluation`` and its detail."""
        ev = EvaluationReport.of(evaluation)
        if self.read is not None:
            return self.read(ev)
        return ev.number(self.metric), ""

    def evaluate(
        self,
        evaluation: Evaluation,
        policy: PromotionPolicy,
        champion: ChampionReference | None = None,
        baseline: BaselineReference | None = None,
    ) -> GateResult:
        """This gate's outcome for one candidate evaluation."""
        ev = EvaluationReport.of(evaluation)
        if self.check is not None:
            return self.check(self, ev, policy, GateReferences(champion, baseline))
        value, detail = self.value(ev)
        return _compare(self.name, value, self.threshold(policy), self.comparison, detail)


def _compare(
    name: str, value: float | None, threshold: float | None, op: Comparison, detail: str = ""
) -> GateResult:
    """Value against threshold, inclusive. ``detail`` explains the value, or why it is missing."""
    if threshold is None:
        kept = detail if value is not None else ""
        return GateResult(name, value, None, "disabled", True, kept or "disabled by policy")
    if value is None:
        return GateResult(name, None, threshold, op, False, detail or "value missing: gate fails closed")
    passed = value >= threshold if op == ">=" else value <= threshold
    return GateResult(name, value, threshold, op, passed, detail)


def _manifest(ev: EvaluationReport) -> str:
    return (ev.data.manifest_sha256 if ev.data is not None else None) or ""


def _external_auc_ci_low(ev: EvaluationReport) -> tuple[float | None, str]:
    return finite(ev.external_pooled.auc_ci_low), ""


def _auc_gap(ev: EvaluationReport) -> tuple[float | None, str]:
    internal, external = finite(ev.internal_test.auc), finite(ev.external_pooled.auc)
    return (internal - external if internal is not None and external is not None else None), ""


def _background_share(ev: EvaluationReport) -> tuple[float | None, str]:
    return ev.background_share, ""


def _flip_rate(ev: EvaluationReport) -> tuple[float | None, str]:
    return ev.flip_rate, ""


def _min_site_auc(ev: EvaluationReport) -> tuple[float | None, str]:
    scored = ev.external_site_aucs()
    if not scored:
        return None, "no external site was evaluated"
    valid = {k: v for k, v in scored.items() if v is not None}
    skipped = sorted(k for k, v in scored.items() if v is None)
    if not valid:
        return None, f"no external site has both classes ({', '.join(skipped)})"
    worst = min(valid, key=lambda k: valid[k])
    detail = f"lowest: {worst}"
    if skipped:
        detail += f"; skipped (single class): {', '.join(skipped)}"
    return valid[worst], detail


def _champion_check(
    gate: Gate,
    ev: EvaluationReport,
    policy: PromotionPolicy,
    refs: GateReferences,
) -> GateResult:
    """Pooled external AUC minus the champion's on the same data, against ``-max drop``."""
    champion = refs.champion
    max_drop = gate.threshold(policy)
    if max_drop is None:
        return _compare(gate.name, None, None, gate.comparison)
    if champion is None:
        return GateResult(gate.name, None, -max_drop, gate.comparison, True, "no champion yet")
    external = finite(ev.external_pooled.auc)
    if champion.external_auc is None or external is None:
        return GateResult(
            gate.name,
            None,
            -max_drop,
            gate.comparison,
            False,
            f"cannot compare with champion v{champion.version} ({champion.source}): AUC missing",
        )
    return _compare(
        gate.name,
        external - champion.external_auc,
        -max_drop,
        gate.comparison,
        f"candidate {external:.4f} vs champion v{champion.version} {champion.external_auc:.4f} "
        f"({champion.source})",
    )


def _same_model(ev: EvaluationReport, baseline: BaselineReference) -> bool:
    model = ev.model or EvaluatedModel()
    return bool(baseline.model_uri and baseline.model_uri == model.uri) or bool(
        baseline.run_id and baseline.run_id == model.run_id
    )


def _other_data(ev: EvaluationReport, baseline: BaselineReference) -> str:
    """Why the baseline was not evaluated on the candidate's data ("" when it was, as far as recorded)."""
    want = _manifest(ev)
    if want and baseline.manifest_sha256 and want != baseline.manifest_sha256:
        return f"manifest {str(baseline.manifest_sha256)[:12]} vs the candidate's {str(want)[:12]}"
    sites = ev.evaluated_sites
    recorded = baseline.evaluated_sites
    if sites is not None and recorded is not None and tuple(sites) != recorded:
        return f"sites {list(recorded)} vs the candidate's {sites}"
    return ""


def _candidate_label(ev: EvaluationReport) -> str:
    return {"isnet": "ISNet", "standard": "standard model"}.get(str(ev.mode), "candidate")


def _standard_check(
    gate: Gate,
    ev: EvaluationReport,
    policy: PromotionPolicy,
    refs: GateReferences,
) -> GateResult:
    """Do no harm: pooled external AUC minus the run's standard model's, against ``-max drop``."""
    baseline = refs.baseline
    max_drop = gate.threshold(policy)
    threshold = None if max_drop is None else -max_drop
    op = "disabled" if threshold is None else gate.comparison

    def result(value: float | None, passed: bool, detail: str) -> GateResult:
        return GateResult(gate.name, value, threshold, op, passed, detail)

    if baseline is None:
        if threshold is None:
            return result(None, True, "disabled by policy")
        if ev.mode == "standard":  # the baseline's own check
            return result(None, True, "not applicable: this is the standard model, the baseline itself")
        return result(None, True, "not applicable: no standard model was trained beside this candidate")
    who = baseline.name
    if _same_model(ev, baseline):
        return result(None, True, f"not applicable: the candidate is the {who} model itself")
    candidate = _candidate_label(ev)
    other = _other_data(ev, baseline)
    if other:
        return result(None, max_drop is None, f"cannot compare with the {who} model: other data ({other})")
    external = finite(ev.external_pooled.auc)
    if external is None or baseline.external_auc is None:
        missing = " and ".join(
            label
            for label, v in ((f"{candidate}'s", external), (f"the {who} model's", baseline.external_auc))
            if v is None
        )
        return result(
            None, max_drop is None, f"cannot compare with the {who} model: {missing} external AUC missing"
        )
    delta = external - baseline.external_auc
    side = "equals" if abs(delta) < 5e-4 else f"is {abs(delta):.3f} {'below' if delta < 0 else 'above'}"
    line = f"{candidate} external AUC {external:.3f} {side} the {who} model's {baseline.external_auc:.3f}"
    line += " of this run"
    if threshold is None:
        return result(delta, True, f"{line} (gate disabled)")
    passed = delta >= threshold - 1e-9  # inclusive: a drop of exactly the margin passes (float noise aside)
    return result(delta, passed, f"{line} (allowed drop {max_drop:.3f}): {'passed' if passed else 'refused'}")


GATES: dict[str, Gate] = {
    g.name: g
    for g in (
        Gate(
            "external_auc_ci_low",
            keys.EXTERNAL_AUC_CI_LOW,
            ">=",
            "min_external_auc_ci_low",
            "lower CI bound of the pooled external AUC",
            read=_external_auc_ci_low,
            eval_tag="eval.external_pooled.auc_ci_low",
        ),
        Gate(
            "auc_gap",
            keys.AUC_GAP,
            "<=",
            "max_auc_gap",
            "internal test AUC - pooled external AUC",
            read=_auc_gap,  # from the two split AUCs, as the evaluation computes it
        ),
        Gate(
            "background_share",
            keys.BACKGROUND_SHARE,
            "<=",
            "max_background_share",
            "mean positive relevance share outside the lungs (audit)",
            read=_background_share,
            eval_tag="eval.background_share",
            summary=("background_relevance", "background relevance share"),
        ),
        Gate(
            "counterfactual_flip_rate",
            keys.FLIP_RATE,
            "<=",
            "max_flip_rate",
            "share of predictions flipped by the background swap",
            read=_flip_rate,
            eval_tag="eval.flip_rate",
            summary=("counterfactual_flip_rate", "counterfactual flip rate"),
        ),
        Gate(
            "min_site_auc",
            keys.SITE_AUC,
            ">=",
            "min_site_auc",
            "lowest AUC over external sites with both classes",
            read=_min_site_auc,
        ),
        Gate(
            "champion_auc_delta",
            keys.EXTERNAL_AUC,
            ">=",
            "max_auc_drop_vs_champion",
            "pooled external AUC minus the champion's, same data (threshold: -max drop)",
            check=_champion_check,
        ),
        Gate(
            "standard_auc_delta",
            keys.EXTERNAL_AUC,
            ">=",
            "max_auc_drop_vs_standard",
            "do no harm: pooled external AUC minus the same run's standard model's (threshold: -max drop)",
            check=_standard_check,
        ),
    )
}
"""Registry of promotion gates by name, in the order they are checked and reported."""

GATE_NAMES = tuple(GATES)
#: the do-no-harm gate: the candidate against the standard model trained beside it
STANDARD_GATE = "standard_auc_delta"


def evaluate_gates(
    evaluation: Evaluation,
    policy: PromotionPolicy,
    champion: ChampionReference | None = None,
    *,
    baseline: BaselineReference | None = None,
) -> list[GateResult]:
    """All gates of :data:`GATES`, in that order, for one candidate evaluation.

    ``champion``: the current champion on the same data (``None``: no champion yet); ``baseline``: the
    standard model of the same run (``None``: none was trained beside the candidate, see the module
    docstring).
    """
    ev = EvaluationReport.of(evaluation)
    return [gate.evaluate(ev, policy, champion, baseline) for gate in GATES.values()]


def standard_line(results: Iterable[GateResult | Mapping[str, Any]]) -> str | None:
    """The do-no-harm gate's one line (its ``detail``) among gate results (objects, or their
    :meth:`GateResult.as_dict` as in ``gates.json``); ``None`` when that gate is not among them."""
    for r in results:
        name, detail = (r.name, r.detail) if isinstance(r, GateResult) else (r.get("name"), r.get("detail"))
        if name == STANDARD_GATE:
            return str(detail or "")
    return None


def all_passed(results: list[GateResult]) -> bool:
    """True when every gate passed (disabled gates pass)."""
    return all(r.passed for r in results)


def evaluation_tags(evaluation: Evaluation) -> dict[str, str]:
    """The gates' ``eval.*`` model-version tags: each gate's value (``""`` when missing)."""
    ev = EvaluationReport.of(evaluation)
    out: dict[str, str] = {}
    for gate in GATES.values():
        if gate.eval_tag is not None:
            value, _ = gate.value(ev)
            out[gate.eval_tag] = "" if value is None else f"{value:.6g}"
    return out


def summary_values(evaluation: Evaluation) -> dict[str, float | None]:
    """The gates' values for the run summary, by their summary keys."""
    ev = EvaluationReport.of(evaluation)
    return {gate.summary[0]: gate.value(ev)[0] for gate in GATES.values() if gate.summary}
