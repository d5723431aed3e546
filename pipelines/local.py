"""Run the training pipeline on this machine with kfp.local (SubprocessRunner), behind ``isnetflow run``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kfp import local

from isnetflow.config import Settings
from pipelines.training import training_pipeline


def run_local(settings: Settings, workdir: str | Path) -> dict[str, Any]:
    """Execute every pipeline task in a subprocess of the current environment; return a run summary."""
    workdir = Path(workdir).resolve()
    root = workdir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    t0 = time.perf_counter()
    training_pipeline(settings_json=settings.model_dump_json())
    wall = time.perf_counter() - t0
    runs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    run_dir = runs[-1]
    cohort = run_dir / "synth-cohort" / "cohort"
    info = json.loads((cohort / "cohort.json").read_text())
    return {
        "pipeline_root": str(run_dir),
        "cohort": {"path": str(cohort), "images": info["n"], "sites": [s["name"] for s in info["sites"]]},
        "wall_seconds": round(wall, 1),
    }
