"""Benchmark of ``isnetflow segment``: end-to-end lung-mask throughput on CPU.

Renders ``n`` synthetic radiographs, stores them as ``size`` x ``size`` 8-bit PNGs, then times
:func:`isnetflow.stages.masks.segment_files` on the folder: read, normalize, letterbox, network, map
back to full resolution, post-process, QC and write the mask PNGs. Model loading is timed separately
and a warm-up run precedes the measurement.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from isnetflow.config import MaskConfig, SynthConfig

__all__ = ["bench_segment"]


def _write_inputs(folder: Path, n: int, size: int, seed: int) -> None:
    from isnetflow.synth import plan_cohort, render_item

    cfg = SynthConfig(n=n, size=max(64, size // 2), seed=seed, workers=1)
    for item in plan_cohort(cfg):
        img = render_item(item, cfg).presentation
        pil = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize(
            (size, size), Image.Resampling.BILINEAR
        )
        pil.save(folder / f"bench-{item.index:05d}.png", compress_level=1)


def bench_segment(
    n: int = 100,
    size: int = 512,
    *,
    model: str | None = None,
    threads: int = 2,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Time segmenting ``n`` PNGs of ``size`` px with ``threads`` torch threads; returns a JSON-able dict."""
    from isnetflow.stages.masks import segment_files

    cfg = MaskConfig(model=model, threads=threads, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="isnetflow-bench-") as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        _write_inputs(src, n, size, seed)
        warm = Path(tmp) / "warm"
        warm.mkdir()
        for f in sorted(src.iterdir())[: min(4, n)]:
            (warm / f.name).write_bytes(f.read_bytes())
        segment_files([warm], Path(tmp) / "warm-out", cfg, progress=False)
        t0 = time.perf_counter()
        summary = segment_files([src], out, cfg, progress=False)
        seconds = time.perf_counter() - t0
    return {
        "images_per_s": round(n / seconds, 2),
        "seconds": round(seconds, 3),
        "n": n,
        "image_size": size,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "model_load_seconds": summary["model_load_seconds"],
        "architecture": summary["model"]["architecture"],
        "network_size": summary["model"]["image_size"],
        "weights_sha256": summary["model"]["weights_sha256"],
        "qc_failed": summary["n_qc_failed"],
    }
