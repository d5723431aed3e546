"""Run the training pipeline on this machine with kfp.local (SubprocessRunner), behind ``isnetflow run``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kfp import local

from isnetflow.config import Settings
from isnetflow.registry.tracking import default_tracking_uri
from pipelines.training import training_pipeline


def run_local(
    settings: Settings,
    workdir: str | Path,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: list[str] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Execute every pipeline task in a subprocess of the current environment; return a run summary."""
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
    )
    wall = time.perf_counter() - t0
    run_dir = max((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    ingest = json.loads(next(run_dir.rglob("ingest.json")).read_text())
    models = {}
    for summary_file in run_dir.rglob("train_summary.json"):
        s = json.loads(summary_file.read_text())
        models[s["mode"]] = {
            "best_val_auc": s["best_val_auc"],
            "model_uri": s["model_uri"],
            "run_id": s["run_id"],
            "train_wall_seconds": s["wall_seconds"],
        }
    return {
        "pipeline_root": str(run_dir),
        "tracking_uri": tracking_uri,
        "data": {
            "source": ingest["source"],
            "valid": ingest["validation"]["counts"].get("valid", 0),
            "quarantined": ingest["validation"]["counts"].get("quarantined", 0),
            "validation_passed": ingest["passed"],
            "internal_sites": ingest["internal_sites"],
            "external_sites": ingest["external_sites"],
        },
        "models": models,
        "wall_seconds": round(wall, 1),
    }
