"""The dotted paths of ``evaluation.json`` values (their MLflow metric keys), defined once, and readers.

The layout is described in :mod:`isnetflow.evaluation.core`. A value is named by its dotted path
(``"splits.external_pooled.auc"``); the same path is its MLflow metric key in
:func:`isnetflow.evaluation.report.flat_metrics`. A ``*`` part of a path stands for every key of that
level (``"sites.*.auc"``: one value per site, see :func:`expand`).

The file itself is typed in :mod:`isnetflow.artifacts.evaluation` (:class:`EvaluationReport`), which the
gates, tags and summaries read; the paths here name its values as metrics (and a registered gate's value
that the model does not name). This module imports nothing heavy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from isnetflow.artifacts.evaluation import EVALUATION_FILE, EvaluationReport

__all__ = [
    "AUC",
    "AUC_CI_HIGH",
    "AUC_CI_LOW",
    "AUC_GAP",
    "AUDIT",
    "BACKGROUND_SHARE",
    "CLASSIFICATION_METRICS",
    "EVALUATION_FILE",
    "EXTERNAL_AUC",
    "EXTERNAL_AUC_CI_LOW",
    "EXTERNAL_POOLED",
    "FLIP_RATE",
    "GAP_SECTION",
    "INTERNAL_TEST",
    "INTERNAL_TEST_AUC",
    "INTERNAL_VAL",
    "SITES",
    "SITE_AUC",
    "SPLITS",
    "THRESHOLD",
    "THRESHOLD_SECTION",
    "as_number",
    "expand",
    "external_site_aucs",
    "get",
    "number",
    "path",
    "put",
]


# top-level sections
SPLITS = "splits"
SITES = "sites"
GAP_SECTION = "gap"
AUDIT = "audit"
THRESHOLD_SECTION = "threshold"
CLASSIFICATION_METRICS = "classification_metrics"

# the split sets under ``splits`` (and ``classification_metrics``)
INTERNAL_VAL = "internal_val"
INTERNAL_TEST = "internal_test"
EXTERNAL_POOLED = "external_pooled"

# metrics of one image set (a split set or a site)
AUC = "auc"
AUC_CI_LOW = "auc_ci_low"
AUC_CI_HIGH = "auc_ci_high"


def path(*parts: str) -> str:
    """A dotted key path from its parts."""
    return ".".join(parts)


# the metric keys of the values the promotion gates read (the gates read them from the typed report)
INTERNAL_TEST_AUC = path(SPLITS, INTERNAL_TEST, AUC)
EXTERNAL_AUC = path(SPLITS, EXTERNAL_POOLED, AUC)
EXTERNAL_AUC_CI_LOW = path(SPLITS, EXTERNAL_POOLED, AUC_CI_LOW)
AUC_GAP = path(GAP_SECTION, "internal_minus_external_auc")
BACKGROUND_SHARE = path(AUDIT, "background_share", "pooled")
FLIP_RATE = path(AUDIT, "counterfactual", "flip_rate")
SITE_AUC = path(SITES, "*", AUC)
THRESHOLD = path(THRESHOLD_SECTION, "value")


def get(evaluation: Mapping[str, Any], key: str) -> Any:
    """The value at dotted path ``key``; ``None`` where a part is missing."""
    cur: Any = evaluation
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def put(evaluation: dict[str, Any], key: str, value: Any) -> None:
    """Set the value at dotted path ``key``, creating the sections on the way."""
    *sections, last = key.split(".")
    cur = evaluation
    for part in sections:
        cur = cur.setdefault(part, {})
    cur[last] = value


def number(evaluation: Mapping[str, Any], key: str) -> float | None:
    """The value at ``key`` as a finite float; ``None`` when missing, not a number or not finite."""
    return as_number(get(evaluation, key))


def as_number(value: Any) -> float | None:
    """``value`` as a finite float (``None`` for anything else, booleans included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def expand(evaluation: Mapping[str, Any], pattern: str) -> dict[str, Any]:
    """``{concrete path: value}`` for a path whose ``*`` parts match every key of their level."""
    found: dict[str, Any] = {"": evaluation}
    for part in pattern.split("."):
        deeper: dict[str, Any] = {}
        for prefix, node in found.items():
            if not isinstance(node, Mapping):
                continue
            names = list(node) if part == "*" else [part] if part in node else []
            for name in names:
                deeper[f"{prefix}.{name}" if prefix else str(name)] = node[name]
        found = deeper
    return found


def external_site_aucs(evaluation: Mapping[str, Any]) -> dict[str, float | None]:
    """AUC of every external site (``None`` for a site without both classes), in the file's order: the
    report's :meth:`~isnetflow.artifacts.evaluation.EvaluationReport.external_site_aucs`."""
    return EvaluationReport.of(evaluation).external_site_aucs()
