"""The end-of-run table of ``isnetflow run``: ISNet vs standard, the gates, the promotion, where to look.

:func:`run_summary_renderable` turns the run summary (``isnetflow_kfp.pipelines.local.collect_summary``:
keys ``models.{isnet,standard}.*``, ``promotion.*``, ``data.*``, ``data_check``, ``tracking_uri``) into a
rich renderable; :func:`render_run_summary` gives the same as plain text. Under the table, the ISNet's
do-no-harm gate (``models.isnet.standard_comparison``) is one line: its external AUC against the standard
model's of the same run, and whether that refused it. The row "training CE < 0.5 from epoch" is when each
model learned (:func:`isnetflow.artifacts.training.learning_milestones`): "never" means it did not learn
the disease. ``data.confound`` (the site/label
confound of the validation, :mod:`isnetflow.validation.balance`) is one line under the data line.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from isnetflow.artifacts.training import learned_line
from isnetflow.evaluation.gates import GATES, STANDARD_GATE

__all__ = ["mlflow_ui_command", "render_run_summary", "run_summary_renderable"]

_MODELS = (("isnet", "ISNet"), ("standard", "standard"))


def mlflow_ui_command(tracking_uri: str | None, mlflow: str = "mlflow") -> str:
    """How to browse the run: ``mlflow ui --backend-store-uri ...`` for a local store, else the server URL."""
    if not tracking_uri:
        return f"{mlflow} ui"
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    return f"{shlex.quote(mlflow)} ui --backend-store-uri {shlex.quote(tracking_uri)}"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"


def _auc_ci(m: Mapping[str, Any]) -> str:
    ci = m.get("external_auc_ci") or [None, None]
    text = _num(m.get("external_auc"))
    if len(ci) == 2 and ci[0] is not None and ci[1] is not None:
        text += f" ({float(ci[0]):.3f}–{float(ci[1]):.3f})"
    return text


def _gate(v: Any) -> Text:
    if v is True:
        return Text("pass", style="green")
    if v is False:
        return Text("FAIL", style="bold red")
    return Text("—", style="dim")


def _metrics_table(models: Mapping[str, Any]) -> Table:
    present = [(k, label) for k, label in _MODELS if k in models]
    table = Table(title="ISNet vs standard", title_justify="left", show_lines=False)
    table.add_column("", style="bold")
    for _, label in present:
        table.add_column(label, justify="right")

    def row(name: str, cells: list[str | Text]) -> None:
        table.add_row(name, *cells)

    row("internal test AUC", [_num(models[k].get("internal_auc")) for k, _ in present])
    row("external pooled AUC (95% CI)", [_auc_ci(models[k]) for k, _ in present])
    if any("ce_below_half_epoch" in models[k] for k, _ in present):  # absent from older summaries
        row(
            "training CE < 0.5 from epoch",
            [learned_line(models[k]["ce_below_half_epoch"], models[k].get("learned_early"))
             if "ce_below_half_epoch" in models[k] else "n/a" for k, _ in present],
        )  # fmt: skip
    for gate in GATES.values():  # the gates' values the summary carries (evaluation.gates.summary_values)
        if gate.summary is not None:
            key, label = gate.summary
            row(label, [_num(models[k].get(key)) for k, _ in present])
    gate_names: list[str] = []
    for k, _ in present:
        for g in models[k].get("gates") or {}:
            if g not in gate_names:
                gate_names.append(g)
    if gate_names:
        table.add_section()
    for g in gate_names:
        row(f"gate: {g}", [_gate((models[k].get("gates") or {}).get(g)) for k, _ in present])
    table.add_section()
    row("all gates passed", [_gate(models[k].get("gates_passed")) for k, _ in present])
    return table


def run_summary_renderable(summary: Mapping[str, Any], *, mlflow: str = "mlflow") -> RenderableType:
    """The summary as a rich renderable (a metrics/gates table and the decision, model and UI lines)."""
    parts: list[RenderableType] = []
    data = summary.get("data") or {}
    if data:
        ignored = f", {data['ignored']} ignored" if "ignored" in data else ""  # older summaries: none
        parts.append(
            Text(
                f"data: {data.get('valid', 0)} valid, {data.get('quarantined', 0)} quarantined{ignored} "
                f"(validation {'passed' if data.get('validation_passed') else 'FAILED'}); "
                f"internal sites {', '.join(data.get('internal_sites') or []) or '-'}; "
                f"external sites {', '.join(data.get('external_sites') or []) or '-'}"
            )
        )
    confound = data.get("confound") or {}
    if confound.get("line"):  # the site/label confound (validate.confound: warn, or fail)
        fails = confound.get("action") == "fail"
        parts.append(
            Text(
                f"{'FAILED' if fails else 'warning'}: {confound['line']}", style="red" if fails else "yellow"
            )
        )
    check = summary.get("data_check") or {}
    if check:
        parts.append(Text(f"data check: {check.get('decision', '?')} ({check.get('reason', '')})"))
    models = summary.get("models") or {}
    if models:
        parts.append(_metrics_table(models))
        isnet = models.get("isnet") or {}
        if isnet.get("standard_comparison"):  # the do-no-harm gate's one line
            passed = (isnet.get("gates") or {}).get(STANDARD_GATE)
            style = "green" if passed is True else "bold red" if passed is False else ""
            parts.append(Text(f"do no harm: {isnet['standard_comparison']}", style=style))
    else:
        parts.append(Text("no model was trained in this run", style="yellow"))
    promotion = summary.get("promotion") or {}
    decision = str(promotion.get("decision") or "n/a")
    style = "bold green" if decision == "promoted" else "bold red" if decision == "rejected" else "bold"
    line = Text("promotion: ")
    line.append(decision, style=style)
    if promotion.get("reason"):
        line.append(f" ({promotion['reason']})")
    parts.append(line)
    model_uri = promotion.get("model_uri") or (models.get("isnet") or {}).get("model_uri")
    label = "registered model" if promotion.get("model_uri") else "ISNet model (not registered)"
    parts.append(Text(f"{label}: {model_uri or 'n/a'}"))
    parts.append(Text(f"MLflow UI: {mlflow_ui_command(summary.get('tracking_uri'), mlflow)}"))
    reports = [f"{k}: {m['report']}" for k, m in models.items() if m.get("report")]
    if reports:
        parts.append(Text("reports: " + "; ".join(reports)))
    if summary.get("wall_seconds") is not None:
        parts.append(Text(f"pipeline root: {summary.get('pipeline_root')}  ({summary['wall_seconds']} s)"))
    return Group(*parts)


def render_run_summary(summary: Mapping[str, Any], *, width: int = 110, mlflow: str = "mlflow") -> str:
    """:func:`run_summary_renderable` as plain text (no colours)."""
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    with console.capture() as capture:
        console.print(run_summary_renderable(summary, mlflow=mlflow), soft_wrap=True)
    return capture.get()
