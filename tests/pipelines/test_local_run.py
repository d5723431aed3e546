"""The pipeline compiles with the expected tasks and runs end to end with kfp.local on a shrunk config."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import yaml
from kfp import compiler

from isnetflow.config import Settings
from pipelines.local import run_local
from pipelines.training import training_pipeline


def _compiled(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(training_pipeline, str(out))
    return yaml.safe_load(out.read_text())


def test_compiled_tasks_images_gpu_and_conditions(tmp_path: Path) -> None:
    spec = _compiled(tmp_path)
    for ex in spec["deploymentSpec"]["executors"].values():
        assert ex["container"]["image"].startswith("ghcr.io/isnetflow/isnetflow:")
    root = spec["root"]["dag"]["tasks"]
    assert "ingest" in root
    cond = next(t for name, t in root.items() if name.startswith("condition"))
    assert "ingest" in cond["triggerPolicy"]["condition"] and "Output" in cond["triggerPolicy"]["condition"]
    inner = spec["components"][cond["componentRef"]["name"]]["dag"]["tasks"]
    assert "lung-masks" in inner
    trains = [t for n, t in inner.items() if n.startswith("train-model")]
    evals = [t for n, t in inner.items() if n.startswith("evaluate-model")]
    assert len(trains) == 2 and len(evals) == 2
    modes = {t["inputs"]["parameters"]["mode"]["runtimeValue"]["constant"] for t in trains}
    assert modes == {"isnet", "standard"}
    for ex_name, ex in spec["deploymentSpec"]["executors"].items():
        resources = ex["container"].get("resources", {})
        if "train-model" in ex_name:
            acc = resources["accelerator"]
            assert acc["resourceCount"] == "1" and "gpu" in acc["resourceType"]
        else:
            assert "accelerator" not in resources
        assert resources.get("cpuRequest") and resources.get("memoryLimit"), ex_name
    # Promotion sits behind a second condition on the ISNet evaluation's gate result.
    gate = next(t for n, t in inner.items() if n.startswith("condition"))
    assert "evaluate-model" in gate["triggerPolicy"]["condition"]
    gate_tasks = spec["components"][gate["componentRef"]["name"]]["dag"]["tasks"]
    assert list(gate_tasks) == ["promote-model"]


def test_local_run_end_to_end(tmp_path: Path) -> None:
    s = Settings()
    s = s.model_copy(
        update={
            "synth": s.synth.model_copy(update={"n": 72, "size": 96}),
            "validate": s.validate.model_copy(update={"image_size": 96, "min_images_per_site": 1}),
            "train": s.train.model_copy(
                update={"model": "cnn-small", "image_size": 48, "batch_size": 8, "epochs": 2,
                        "warmup_epochs": 1, "audit_samples": 8}
            ),
        }
    )  # fmt: skip
    result = run_local(s, tmp_path)
    assert result["data"]["valid"] == 72 and result["data"]["validation_passed"]
    assert set(result["models"]) == {"isnet", "standard"}
    for m in result["models"].values():
        assert {"internal_auc", "external_auc", "background_relevance", "gates_passed"} <= set(m)
    assert result["promotion"]["decision"] in {"promoted", "rejected"}
    assert result["wall_seconds"] > 0
    mlflow.set_tracking_uri(result["tracking_uri"])
    for mode, m in result["models"].items():
        run = mlflow.get_run(m["run_id"])
        assert run.data.tags["isnetflow.mode"] == mode
    html = next(Path(result["pipeline_root"]).rglob("report"))
    assert "data:image/png;base64," in html.read_text()
    assert json.loads(next(Path(result["pipeline_root"]).rglob("ingest.json")).read_text())["passed"]
