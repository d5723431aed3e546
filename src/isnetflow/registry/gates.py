"""Promotion gates: pure pass/fail logic on an ``evaluation.json`` payload and a policy.

Gates (names are used in the registry tags ``gate.<name>.value|threshold|passed``):

==============================  =========================================================  =========
gate                            value                                                      passes if
==============================  =========================================================  =========
``external_auc_ci_low``         lower CI bound of the pooled external AUC                  >= min
``auc_gap``                     internal test AUC - pooled external AUC                    <= max
``background_share``            mean positive relevance share outside the lungs (audit)   <= max
``counterfactual_flip_rate``    share of predictions flipped by the background swap        <= max
``min_site_auc``                lowest AUC over external sites with both classes           >= min
``champion_auc_delta``          pooled external AUC minus the champion's, same data        >= -max drop
==============================  =========================================================  =========

A gate whose threshold is ``None`` in the policy is *disabled* (recorded, counts as passed). A gate
whose value is missing or not finite *fails* (fail closed) with a reason in ``detail``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from isnetflow.config import PromotionPolicy

__all__ = ["GATE_NAMES", "ChampionReference", "GateResult", "all_passed", "evaluate_gates"]

GATE_NAMES = (
    "external_auc_ci_low",
    "auc_gap",
    "background_share",
    "counterfactual_flip_rate",
    "min_site_auc",
    "champion_auc_delta",
)


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
        return asdict(self)


@dataclass(frozen=True)
class ChampionReference:
    """The current champion's pooled external AUC on the candidate's evaluation data."""

    version: str
    external_auc: float | None
    source: str  # e.g. "evaluated on <data>" or "recorded tags (same manifest)"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def _get(d: Mapping[str, Any], path: str) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _gate(
    name: str, value: float | None, threshold: float | None, op: Literal[">=", "<="], detail: str = ""
) -> GateResult:
    if threshold is None:
        return GateResult(name, value, None, "disabled", True, detail or "disabled by policy")
    if value is None:
        return GateResult(name, None, threshold, op, False, detail or "value missing: gate fails closed")
    passed = value >= threshold if op == ">=" else value <= threshold
    return GateResult(name, value, threshold, op, passed, detail)


def _min_site_auc(evaluation: Mapping[str, Any]) -> tuple[float | None, str]:
    sites = evaluation.get("sites") or {}
    external = {k: v for k, v in sites.items() if isinstance(v, Mapping) and v.get("role") == "external"}
    if not external:
        return None, "no external site was evaluated"
    scored = {k: _num(v.get("auc")) for k, v in external.items()}
    valid = {k: v for k, v in scored.items() if v is not None}
    skipped = sorted(k for k, v in scored.items() if v is None)
    if not valid:
        return None, f"no external site has both classes ({', '.join(skipped)})"
    worst = min(valid, key=lambda k: valid[k])
    detail = f"lowest: {worst}"
    if skipped:
        detail += f"; skipped (single class): {', '.join(skipped)}"
    return valid[worst], detail


def evaluate_gates(
    evaluation: Mapping[str, Any], policy: PromotionPolicy, champion: ChampionReference | None = None
) -> list[GateResult]:
    """All gates of :data:`GATE_NAMES`, in that order, for one candidate evaluation."""
    ext_low = _num(_get(evaluation, "splits.external_pooled.auc_ci_low"))
    internal = _num(_get(evaluation, "splits.internal_test.auc"))
    external = _num(_get(evaluation, "splits.external_pooled.auc"))
    gap = internal - external if internal is not None and external is not None else None
    share = _num(_get(evaluation, "audit.background_share.pooled"))
    flips = _num(_get(evaluation, "audit.counterfactual.flip_rate"))
    site_auc, site_detail = _min_site_auc(evaluation)
    results = [
        _gate("external_auc_ci_low", ext_low, policy.min_external_auc_ci_low, ">="),
        _gate("auc_gap", gap, policy.max_auc_gap, "<="),
        _gate("background_share", share, policy.max_background_share, "<="),
        _gate("counterfactual_flip_rate", flips, policy.max_flip_rate, "<="),
        _gate(
            "min_site_auc", site_auc, policy.min_site_auc, ">=", site_detail if site_auc is not None else ""
        ),
    ]
    if site_auc is None and policy.min_site_auc is not None:
        results[-1] = GateResult("min_site_auc", None, policy.min_site_auc, ">=", False, site_detail)
    max_drop = policy.max_auc_drop_vs_champion
    if max_drop is None:
        results.append(_gate("champion_auc_delta", None, None, ">="))
    elif champion is None:
        results.append(GateResult("champion_auc_delta", None, -max_drop, ">=", True, "no champion yet"))
    elif champion.external_auc is None or external is None:
        results.append(
            GateResult(
                "champion_auc_delta",
                None,
                -max_drop,
                ">=",
                False,
                f"cannot compare with champion v{champion.version} ({champion.source}): AUC missing",
            )
        )
    else:
        delta = external - champion.external_auc
        results.append(
            _gate(
                "champion_auc_delta",
                delta,
                -max_drop,
                ">=",
                f"candidate {external:.4f} vs champion v{champion.version} {champion.external_auc:.4f} "
                f"({champion.source})",
            )
        )
    return results


def all_passed(results: list[GateResult]) -> bool:
    return all(r.passed for r in results)
