"""Benchmark of the validate stage against a bare pydicom loop over the same files.

``bare_dcmread_files_per_s`` is the practical limit for reading: ``pydicom.dcmread(f).pixel_array`` in
one process, nothing else. ``validate_files_per_s`` is the whole validate stage (fetch, sha256, every
check, decode, normalize, letterbox, write the image, labels join, GX suite, manifest/JSON/HTML) in a
warm process (imports, GX and the worker start method warmed up by a first run), with ``workers``
processes. ``per_file_phase_files_per_s`` is the per-file part alone (what scales with the input).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from isnetflow.config import SynthConfig, ValidateConfig


def _bare_loop(uris: list[str]) -> tuple[float, int]:
    """Seconds for dcmread + pixel_array over ``uris`` (local paths or s3:// URIs) and failures."""
    import pydicom

    from isnetflow.dicom.source import is_s3, read_bytes

    failed = 0
    t0 = time.perf_counter()
    for uri in uris:
        try:
            src: Any = io.BytesIO(read_bytes(uri)) if is_s3(uri) else uri
            pydicom.dcmread(src, force=True).pixel_array  # noqa: B018 - the decode is the point
        except Exception:
            failed += 1
    return time.perf_counter() - t0, failed


def bench_ingest(
    n: int = 300,
    size: int = 256,
    *,
    input: str | None = None,
    labels: str | None = None,
    workers: int = 0,
    seed: int = 0,
    repeats: int = 2,
) -> dict[str, Any]:
    """Time the validate stage and the bare loop (best of ``repeats`` each) on a synthetic cohort.

    Without ``input`` a cohort of ``n`` images at ``size`` px is generated first (not timed).
    """
    from isnetflow.dicom.source import list_files, read_bytes
    from isnetflow.stages import validate as stage
    from isnetflow.synth import generate_cohort

    cfg = ValidateConfig(workers=workers, image_size=size)
    with tempfile.TemporaryDirectory(prefix="isnetflow-bench-") as tmp:
        if input is None:
            cohort = Path(tmp) / "cohort"
            generate_cohort(SynthConfig(n=n, size=size, seed=seed, workers=0), cohort, progress=False)
            input, labels = str(cohort / "dicom"), str(cohort / "labels.csv")
        files = [f.uri for f in list_files(input, exclude=cfg.exclude)]
        for uri in files:  # warm the page cache (or the S3 server) for both contenders
            read_bytes(uri)
        stage.run(cfg, input, Path(tmp) / "warm", labels=labels)  # imports, GX, worker start method

        bare_runs = [_bare_loop(files) for _ in range(repeats)]
        bare, bare_failed = min(bare_runs)
        runs = [stage.run(cfg, input, Path(tmp) / f"out{i}", labels=labels) for i in range(repeats)]
        best = min(runs, key=lambda r: r.summary["wall_seconds"])
    s = best.summary
    n_files = len(files)
    validate_fps = n_files / s["wall_seconds"]
    per_file_fps = n_files / s["per_file_seconds"]
    bare_fps = n_files / bare
    effective_workers = workers or len(os.sched_getaffinity(0)) or 1
    return {
        "files": n_files,
        "image_size": size,
        "valid": s["counts"]["valid"],
        "cores": os.cpu_count(),
        "workers": effective_workers,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "bare_dcmread_files_per_s": round(bare_fps, 1),
        "bare_failed": bare_failed,
        "validate_files_per_s": round(validate_fps, 1),
        "per_file_phase_files_per_s": round(per_file_fps, 1),
        "ratio": round(validate_fps / bare_fps, 3),
        "ratio_per_file_phase": round(per_file_fps / bare_fps, 3),
        "validate_seconds": s["wall_seconds"],
        "per_file_phase_seconds": s["per_file_seconds"],
        "bare_seconds": round(bare, 3),
    }
