"""Run the training pipeline on this machine with kfp.local (SubprocessRunner), behind ``isnetflow run``.

After the run, :func:`run_local` reads the tasks' artifacts under the pipeline root and returns the run
summary (stable keys: ``models.{isnet,standard}.{internal_auc,external_auc,background_relevance}``,
``promotion.{decision,model_uri}``, ``wall_seconds``; ``data_check`` holds the retraining data check's
decision when it ran).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kfp import local

from isnetflow.config import Settings
from isnetflow.registry.tracking import default_tracking_uri
from pipelines.training import training_pipeline


def _get(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def collect_summary(run_dir: Path, tracking_uri: str, wall: float) -> dict[str, Any]:
    """The run summary from the artifacts of one pipeline run."""
    ingest = json.loads(next(run_dir.rglob("ingest.json")).read_text())
    models: dict[str, Any] = {}
    for summary_file in run_dir.rglob("train_summary.json"):
        s = json.loads(summary_file.read_text())
        models[s["mode"]] = {
            "model_uri": s["model_uri"],
            "run_id": s["run_id"],
            "best_val_auc": s["best_val_auc"],
        }
    for ev_file in run_dir.rglob("evaluation.json"):
        ev = json.loads(ev_file.read_text())
        mode = _get(ev, "model", "mode")
        if mode not in models:
            continue
        gates = (
            json.loads((ev_file.parent / "gates.json").read_text())
            if (ev_file.parent / "gates.json").exists()
            else {}
        )
        models[mode].update(
            {
                "internal_auc": _get(ev, "splits", "internal_test", "auc"),
                "external_auc": _get(ev, "splits", "external_pooled", "auc"),
                "external_auc_ci": [
                    _get(ev, "splits", "external_pooled", "auc_ci_low"),
                    _get(ev, "splits", "external_pooled", "auc_ci_high"),
                ],
                "background_relevance": _get(ev, "audit", "background_share", "pooled"),
                "counterfactual_flip_rate": _get(ev, "audit", "counterfactual", "flip_rate"),
                "gates_passed": gates.get("all_gates_passed"),
                "gates": {g["name"]: g.get("passed") for g in gates.get("gates", [])},
                "report": str(ev_file.parent / "report.html"),
            }
        )
    checks = [p for p in run_dir.rglob("data_check") if p.is_file()]
    data_check = json.loads(checks[0].read_text()) if checks else None
    promotion: dict[str, Any] = {"decision": "rejected", "model_uri": None, "candidate": "isnet"}
    decisions = [p for p in run_dir.rglob("decision") if p.is_file()]
    if decisions:
        d = json.loads(decisions[0].read_text())
        promotion.update(
            {"decision": d.get("decision"), "model_uri": d.get("model_uri"), "reason": d.get("reason")}
        )
    elif _get(models, "isnet", "gates_passed") is False:
        failed = [k for k, v in models["isnet"]["gates"].items() if v is False]
        promotion["reason"] = f"gates failed: {', '.join(failed)}"
    elif data_check is not None and not data_check.get("proceed", True):
        promotion.update({"decision": "skipped", "reason": f"no training: {data_check.get('reason')}"})
    elif not ingest["passed"]:
        promotion.update({"decision": "skipped", "reason": f"validation failed: {ingest.get('reason')}"})
    return {
        "pipeline_root": str(run_dir),
        "tracking_uri": tracking_uri,
        "data": {
            "source": ingest["source"],
            "valid": ingest["validation"]["counts"].get("valid", 0),
            "quarantined": ingest["validation"]["counts"].get("quarantined", 0),
            "validation_passed": ingest["passed"],
            "fingerprint": ingest.get("data_fingerprint"),
            "internal_sites": ingest["internal_sites"],
            "external_sites": ingest["external_sites"],
        },
        "data_check": data_check,
        "models": models,
        "promotion": promotion,
        "wall_seconds": round(wall, 1),
    }


def run_local(
    settings: Settings,
    workdir: str | Path,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: list[str] | None = None,
    tracking_uri: str | None = None,
    skip_if_unchanged: bool = False,
) -> dict[str, Any]:
    """Execute every pipeline task in a subprocess of the current environment; return the run summary.

    Unlike a scheduled run, a local run trains even when the data equals the champion's, unless
    ``skip_if_unchanged``.
    """
    workdir = Path(workdir).resolve()
    root = workdir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or default_tracking_uri(workdir)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    t0 = time.perf_counter()
    training_pipeline(
        settings_json=settings.model_dump_json(),
        input_uri=input_uri,
        labels_uri=labels_uri,
        external_sites_json=json.dumps(external_sites or []),
        tracking_uri=tracking_uri,
        skip_if_unchanged=skip_if_unchanged,
    )
    wall = time.perf_counter() - t0
    run_dir = max((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return collect_summary(run_dir, tracking_uri, wall)
