"""Rendering of an evaluation: JSON-safe payload, flat metrics, kfp data and a self-contained HTML report."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from isnetflow.artifacts import json_safe
from isnetflow.evaluation import keys
from isnetflow.evaluation.gates import GATES, standard_line
from isnetflow.viz import figure_html

# ``json_safe`` is the artifacts' (isnetflow.artifacts); named here too, beside the renderers that use it
__all__ = [
    "flat_metrics",
    "gates_html",
    "json_safe",
    "kfp_classification_metrics",
    "render_html",
    "split_note",
    "with_gates",
]


def _key(name: str) -> str:
    """MLflow metric keys allow alphanumerics, ``_ - . /`` and spaces; map anything else to ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def flat_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """Numeric headline values as ``{"splits.external_pooled.auc": 0.81, ...}`` for ``mlflow.log_metrics``.

    Every promotion gate's metric (:data:`isnetflow.evaluation.gates.GATES`) is among them.
    """
    out: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[_key(key)] = float(value)

    fields: tuple[str, ...] = (keys.AUC, keys.AUC_CI_LOW, keys.AUC_CI_HIGH, "f1", "sensitivity")
    fields += ("specificity", "balanced_accuracy", "brier", "ece", "n")
    for split, m in evaluation.get(keys.SPLITS, {}).items():
        for f in fields:
            put(keys.path(keys.SPLITS, split, f), m.get(f))
    for site, m in evaluation.get(keys.SITES, {}).items():
        for f in (keys.AUC, keys.AUC_CI_LOW, "sensitivity", "specificity", "n"):
            put(keys.path(keys.SITES, site, f), m.get(f))
    put(keys.AUC_GAP, keys.get(evaluation, keys.AUC_GAP))
    put("threshold", keys.get(evaluation, keys.THRESHOLD))
    audit = evaluation.get(keys.AUDIT, {})
    bg = audit.get("background_share", {})
    for k in ("pooled", "internal", "external"):
        put(f"audit.background_share.{k}", bg.get(k))
    for site, v in bg.get("per_site", {}).items():
        put(f"audit.background_share.per_site.{site}", v)
    cf = audit.get("counterfactual", {})
    for k in ("flip_rate", "mean_abs_score_change", "n_pairs"):
        put(f"audit.counterfactual.{k}", cf.get(k))
    for gate in GATES.values():  # already there, unless a gate reads a metric of its own
        for key, value in keys.expand(evaluation, gate.metric).items():
            put(key, value)
    return out


def kfp_classification_metrics(evaluation: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per split: ``{"roc": {"fpr", "tpr", "thresholds"}, "confusion_matrix": {"categories", "matrix"}}``.

    Plain lists for a kfp ``ClassificationMetrics`` artifact: the component calls
    ``metrics.log_roc_curve(fpr, tpr, thresholds)`` and ``metrics.log_confusion_matrix(categories, matrix)``.
    """
    return dict(evaluation.get(keys.CLASSIFICATION_METRICS, {}))


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _ci(m: Mapping[str, Any]) -> str:
    lo, hi = m.get("auc_ci_low"), m.get("auc_ci_high")
    return f"{_fmt(lo)}–{_fmt(hi)}" if lo is not None and hi is not None else "–"


_METRIC_COLS: tuple[str, ...] = ("n", "n_patients", "auc", "AUC 95% CI", "f1", "sensitivity", "specificity")
_METRIC_COLS += ("balanced_accuracy", "brier", "ece")


def _metric_row(name: str, m: Mapping[str, Any], extra: Sequence[Any] = ()) -> list[Any]:
    vals = [m.get(c) if c != "AUC 95% CI" else _ci(m) for c in _METRIC_COLS]
    return [name, *extra, *vals]


def split_note(data: Mapping[str, Any]) -> str:
    """One HTML paragraph saying where the internal validation and test patients came from: the training
    run's stored list (``splits.csv``, digest verified) or a recomputation (a model trained before it)."""
    if data.get("split_recomputed"):
        return (
            "<p class='note'><b>Split recomputed</b>: the model has no stored held-out patient list "
            "(splits.csv); the internal validation and test patients were recomputed from seed "
            + _fmt(data.get("split_seed"))
            + ", val_fraction "
            + _fmt(data.get("val_fraction"))
            + ", test_fraction "
            + _fmt(data.get("test_fraction"))
            + " ("
            + html.escape(str(data.get("split_source", "")))
            + "; evaluate.recompute_split). They are the training run's only if the data and the split "
            "code did not change since.</p>"
        )
    if not data.get("splits_file"):
        return ""
    unlisted = (data.get("splits") or {}).get("unlisted")
    extra = f" {int(unlisted)} internal images of patients it does not list are left out." if unlisted else ""
    return (
        "<p class='note'>Internal validation and test patients: the training run's held-out patient list "
        + html.escape(str(data["splits_file"]))
        + " (SHA-256 "
        + html.escape(str(data.get("splits_sha256", ""))[:16])
        + "…, verified)."
        + html.escape(extra)
        + "</p>"
    )


def render_html(
    evaluation: Mapping[str, Any], figures: Sequence[tuple[str, str | Path]], *, title: str = "Evaluation"
) -> str:
    """A self-contained HTML page: headline numbers, tables per split/site, audit, embedded PNG figures."""
    ev = evaluation
    model = ev.get("model", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:0.5em 0 1.2em;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        "figure{margin:0 0 1.5em}img{max-width:100%;border:1px solid #ccc}"
        ".note{color:#555;font-size:13px}</style></head><body>",
        f"<h2>{html.escape(title)}</h2>",
        "<p class='note'>Score = 1 − P("
        + html.escape(str((model.get("classes") or ["first class"])[0]))
        + "); threshold "
        + _fmt(ev.get("threshold", {}).get("value"))
        + " ("
        + html.escape(str(ev.get("threshold", {}).get("method", "")))
        + "). AUC intervals: patient-level bootstrap. Model: "
        + html.escape(str(model.get("uri", "")))
        + "</p>",
    ]
    shown = {
        keys.INTERNAL_TEST_AUC: "internal test AUC",
        keys.EXTERNAL_AUC: "external pooled AUC",
        keys.EXTERNAL_AUC_CI_LOW: "external pooled AUC 95% CI low",
        keys.AUC_GAP: "internal − external AUC gap",
        keys.BACKGROUND_SHARE: "background relevance share (pooled)",
        keys.FLIP_RATE: "counterfactual flip rate",
        "audit.counterfactual.mean_abs_score_change": "counterfactual mean |Δscore|",
    }
    # a gate's metric not shown above gets its own row (per-site metrics are in the site table)
    for gate in GATES.values():
        if "*" not in gate.metric:
            shown.setdefault(gate.metric, gate.description)
    headline = [[label, keys.get(ev, key)] for key, label in shown.items()]
    data = ev.get("data", {})
    if data.get("split_recomputed"):
        headline.insert(0, ["internal test patients", "RECOMPUTED (the model has no stored splits.csv)"])
    elif data.get("splits_file"):
        headline.insert(0, ["internal test patients", "the training run's splits.csv (digest verified)"])
    parts += ["<h3>Headline</h3>", _table(["quantity", "value"], headline)]
    rows = [_metric_row(k, m) for k, m in ev.get("splits", {}).items()]
    parts += ["<h3>Splits</h3>", split_note(ev.get("data", {})), _table(["split", *_METRIC_COLS], rows)]
    rows = [_metric_row(k, m, [m.get("role")]) for k, m in ev.get("sites", {}).items()]
    parts += ["<h3>Sites</h3>", _table(["site", "role", *_METRIC_COLS], rows)]
    audit = ev.get("audit", {})
    if audit:
        bg = audit.get("background_share", {})
        cf = audit.get("counterfactual", {})
        cf_sites = cf.get("per_site", {})
        sites = list(dict.fromkeys([*bg.get("per_site", {}), *cf_sites]))
        rows = [
            [
                s,
                bg.get("per_site", {}).get(s),
                cf_sites.get(s, {}).get("flip_rate"),
                cf_sites.get(s, {}).get("mean_abs_score_change"),
                cf_sites.get(s, {}).get("n_pairs"),
            ]
            for s in sites
        ]
        parts += [
            "<h3>Shortcut audit</h3>",
            "<p class='note'>Background share: positive zennit relevance ("
            + html.escape(str(bg.get("composite", "")))
            + ") outside the lung mask / all positive relevance, mean over "
            + _fmt(bg.get("n_images"))
            + " images (background area: "
            + _fmt(bg.get("background_area"))
            + " of the image, the share an even spread would get). Counterfactual: "
            + html.escape(str(cf.get("construction", "")))
            + f"; donors from another site ({html.escape(str(cf.get('pairing', '')))}).</p>",
            _table(["site", "background share", "flip rate", "mean |Δscore|", "pairs"], rows),
        ]
    parts.append("<h3>Figures</h3>")
    parts += [figure_html(caption, png) for caption, png in figures]
    parts.append("</body></html>")
    return "\n".join(parts)


def gates_html(gates: Sequence[Mapping[str, Any]]) -> str:
    """The promotion gates section: the do-no-harm line (ISNet against the standard model of the same
    run, :func:`isnetflow.evaluation.gates.standard_line`) and one row per gate (``GateResult.as_dict``)."""
    parts = ["<h3>Promotion gates</h3>"]
    line = standard_line(gates)
    if line:
        parts.append(f"<p class='gate-line'><b>Do no harm:</b> {html.escape(line)}</p>")
    rows = [
        [
            g.get("name"),
            g.get("value"),
            "disabled"
            if g.get("comparison") == "disabled"
            else f"{g.get('comparison')} {_fmt(g.get('threshold'))}",
            "pass" if g.get("passed") else "FAIL",
            g.get("detail") or "",
        ]
        for g in gates
    ]
    parts.append(_table(["gate", "value", "threshold", "result", "detail"], rows))
    return "\n".join(parts)


def with_gates(page: str, gates: Sequence[Mapping[str, Any]]) -> str:
    """``page`` (a :func:`render_html` report) with :func:`gates_html` before its headline table."""
    section = gates_html(gates)
    for anchor in ("<h3>Headline</h3>", "</body>"):
        if anchor in page:
            return page.replace(anchor, f"{section}\n{anchor}", 1)
    return page + section
