"""End-to-end check on the synthetic cohort: standard vs ISNet, evaluated and gated (slow).

Trains a standard and an ISNet model with the training API on an in-memory synthetic cohort
(:func:`isnetflow.training.data.from_synthetic`), evaluates both with :func:`evaluate_model` (metrics,
zennit audit, counterfactual swap) and runs the default promotion gates. It asserts that the evaluation
and the gates *work* -- training quality is measured, not asserted -- and prints a comparison table.

Run with ``pytest -m slow tests/unit/evaluation/test_eval_e2e_synthetic.py -s``; ``run_e2e`` can also
be called directly with larger settings (``python tests/unit/evaluation/test_eval_e2e_synthetic.py``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from isnetflow.config import EvaluateConfig, PromotionPolicy, SynthConfig, TrainConfig
from isnetflow.evaluation.core import evaluate_model
from isnetflow.evaluation.gates import ChampionReference, evaluate_gates
from isnetflow.evaluation.report import json_safe
from isnetflow.training import train
from isnetflow.training.data import from_synthetic


def run_e2e(
    n: int = 500,
    size: int = 64,
    epochs: int = 10,
    warmup: int = 3,
    model: str = "densenet-small",
    threads: int = 2,
    out: Path | None = None,
) -> dict[str, Any]:
    """Train both modes, evaluate, gate (the ISNet against the standard model as champion)."""
    t0 = time.perf_counter()
    synth = SynthConfig(n=n, size=max(128, 2 * size), seed=11, workers=0)
    base = TrainConfig(
        model=model,
        image_size=size,
        batch_size=16,
        epochs=epochs,
        warmup_epochs=warmup,
        val_fraction=0.2,
        test_fraction=0.2,
        audit_samples=16,
        num_threads=threads,
        device="cpu",
        checkpoint_every=10_000,
        patience=epochs,
    )
    data = from_synthetic(synth, size, val_fraction=base.val_fraction, test_fraction=base.test_fraction)
    ecfg = EvaluateConfig(n_boot=300, audit_per_site=16, counterfactual_max=300, num_threads=threads)
    report: dict[str, Any] = {"settings": {"n": n, "size": size, "epochs": epochs, "model": model}}
    evaluations = {}
    for mode in ("standard", "isnet"):
        t = time.perf_counter()
        result = train(base.model_copy(update={"mode": mode}), data, progress=False)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        ev = json_safe(evaluate_model(result.model, data, ecfg).payload)
        evaluations[mode] = ev
        report[mode] = {
            "train_seconds": round(train_s, 1),
            "eval_seconds": round(time.perf_counter() - t, 1),
            "best_val_auc": result.best_val_auc,
            "internal_test_auc": ev["splits"]["internal_test"]["auc"],
            "external_auc": ev["splits"]["external_pooled"]["auc"],
            "external_auc_ci": [
                ev["splits"]["external_pooled"]["auc_ci_low"],
                ev["splits"]["external_pooled"]["auc_ci_high"],
            ],
            "gap": ev["gap"]["internal_minus_external_auc"],
            "site_auc": {k: v["auc"] for k, v in ev["sites"].items()},
            "background_share": ev["audit"]["background_share"]["pooled"],
            "background_share_per_site": ev["audit"]["background_share"]["per_site"],
            "flip_rate": ev["audit"]["counterfactual"]["flip_rate"],
            "mean_abs_score_change": ev["audit"]["counterfactual"]["mean_abs_score_change"],
        }
    policy = PromotionPolicy()
    std_auc = evaluations["standard"]["splits"]["external_pooled"]["auc"]
    champion = ChampionReference("standard", std_auc, "same run")
    for mode, ref in (("standard", None), ("isnet", champion)):
        gates = evaluate_gates(evaluations[mode], policy, ref)
        report[mode]["gates"] = {g.name: {"value": g.value, "passed": g.passed} for g in gates}
        report[mode]["all_gates_passed"] = all(g.passed for g in gates)
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "e2e.json").write_text(json.dumps(report, indent=2))
        for mode, ev in evaluations.items():
            (out / f"evaluation-{mode}.json").write_text(json.dumps(ev, indent=2))
    return report


@pytest.mark.slow
def test_standard_vs_isnet_on_the_synthetic_cohort(tmp_path: Path) -> None:
    report = run_e2e(n=300, size=48, epochs=6, warmup=2, model="cnn-small", out=tmp_path)
    print(json.dumps(report, indent=2))
    for mode in ("standard", "isnet"):
        r = report[mode]
        for key in ("internal_test_auc", "external_auc", "background_share", "flip_rate"):
            assert r[key] is not None and math.isfinite(r[key]), (mode, key)
        assert 0.0 <= r["background_share"] <= 1.0 and 0.0 <= r["flip_rate"] <= 1.0
        assert set(r["gates"]) >= {"external_auc_ci_low", "background_share", "champion_auc_delta"}
        assert r["all_gates_passed"] == all(g["passed"] for g in r["gates"].values())


if __name__ == "__main__":  # pragma: no cover - manual runs with larger settings
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    out = Path(args.pop("out", "e2e-out"))
    kw: dict[str, Any] = {k: (v if k == "model" else int(v)) for k, v in args.items()}
    print(json.dumps(run_e2e(out=out, **kw), indent=2))
