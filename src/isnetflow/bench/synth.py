"""Benchmark of the synthetic cohort generator on one core."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from isnetflow.config import SynthConfig


def bench_synth(n: int = 200, size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Time ``generate_cohort`` with one worker (render, DICOM write, mask PNG, CSV/JSON)."""
    from isnetflow.synth import generate_cohort

    cfg = SynthConfig(n=n, size=size, seed=seed, workers=1)
    # Warm-up: font cache, imports.
    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(cfg.model_copy(update={"n": 6}), tmp, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_cohort(cfg, tmp, progress=False)
        dt = time.perf_counter() - t0
    return {
        "images": n,
        "size": size,
        "workers": 1,
        "seconds": round(dt, 3),
        "images_per_s": round(n / dt, 1),
    }
