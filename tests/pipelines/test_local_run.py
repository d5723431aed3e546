"""The pipeline compiles and runs end to end with kfp.local on a shrunk config."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from kfp import compiler

from isnetflow.config import Settings
from pipelines.local import run_local
from pipelines.training import training_pipeline


def test_compiles_with_image_and_resources(tmp_path: Path) -> None:
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(training_pipeline, str(out))
    spec = yaml.safe_load(out.read_text())
    execs = spec["deploymentSpec"]["executors"]
    assert execs, "no executors compiled"
    for ex in execs.values():
        assert ex["container"]["image"].startswith("ghcr.io/isnetflow/isnetflow:")
    assert "synth-cohort" in spec["root"]["dag"]["tasks"]


def test_local_run_writes_cohort(tmp_path: Path) -> None:
    settings = Settings()
    settings = settings.model_copy(update={"synth": settings.synth.model_copy(update={"n": 24, "size": 96})})
    result = run_local(settings, tmp_path)
    cohort = Path(result["cohort"]["path"])
    info = json.loads((cohort / "cohort.json").read_text())
    assert info["n"] == 24 and result["cohort"]["images"] == 24
    assert len(list((cohort / "dicom").rglob("*.dcm"))) == 24
    html = next(Path(result["pipeline_root"]).rglob("preview"))
    assert "data:image/png;base64," in html.read_text()
