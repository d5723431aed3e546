"""Benchmark of the validate stage against a bare pydicom loop over the same files.

What is measured (all on the same files, page cache warm, in one warm process):

* ``bare_dcmread_files_per_s``: ``pydicom.dcmread(f).pixel_array`` in one process, nothing else: the
  practical limit for reading the files, as the issue defines it.
* ``validate_files_per_s``: the whole validate stage (list, fetch, sha256, every check, decode,
  window, letterbox, write the image, labels join, dataset checks, GX suite, manifest/JSON/HTML) with
  ``workers`` processes. ``ratio`` = validate / bare.
* ``per_file_phase_files_per_s``: the per-file part of the same runs alone (what scales with the
  input); ``fixed_seconds`` is the rest (GX suite, reports, pool start), paid once per run.
* ``validate_1proc_files_per_s``: the per-file work run in this process, no pool: how much more than
  the bare loop a file costs on one core. ``pool_speedup`` = per-file phase / 1-process rate: how much
  the process pool actually gained on this machine (on a shared machine, far less than the core count).
* ``sha256_files_per_s``: reading each file and hashing it (``hashlib.file_digest``), one process: the
  one piece of required work (the manifest's ``sha256`` column, the data fingerprint, the duplicate
  check) that the bare loop does not do and no decoder can skip. ``ceiling_ratio`` =
  ``workers * t_bare / (t_bare + t_sha256)``: the ratio a stage doing *nothing but* the bare loop's
  decode plus the hash would reach on ``workers`` cores with perfect scaling. On uncompressed files
  hashing costs more than decoding (a copy), so this bound, not the implementation, decides whether a
  goal such as 0.8 is reachable on a small machine.

Rounds are interleaved (bare, stage, one-process, bare, ...) so drifting machine load hits all of them
alike; each figure is the best of ``repeats`` rounds (all rounds are in ``runs``). The load average
before and after is reported: on a shared machine compare ratios, not absolute rates.

Without ``input`` a synthetic cohort of ``n`` files at ``size`` px is made first (not timed):
``unique`` distinct images are rendered (rendering is slow) and copied, with new UIDs, up to ``n``
files; the copies are byte-for-byte the same size and cost the same to validate. The default input
size, 1024 px, is between the 256 px training size and real CR/DX files (~2000-3000 px, 5-10 MB): large
enough that per-pixel work (decode, sha256, window, resize) dominates as it does on real data, small
enough to generate quickly. By default the synthetic files are uncompressed (decoding is a copy);
``transfer_syntax`` re-encodes every file losslessly (RLE, JPEG-LS, JPEG 2000, as PACS archives store
them; not timed), where decoding dominates and the hash matters less.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from isnetflow.config import SynthConfig, ValidateConfig, resolve_workers

#: ``--transfer-syntax`` names -> UIDs of the lossless encodings the synthetic cohort can be stored in.
TRANSFER_SYNTAXES: dict[str, str | None] = {
    "explicit": None,  # Explicit VR Little Endian, uncompressed: what the generator writes
    "rle": "1.2.840.10008.1.2.5",
    "jpeg-ls": "1.2.840.10008.1.2.4.80",
    "jpeg2000": "1.2.840.10008.1.2.4.90",
}


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


def _hash_loop(uris: list[str]) -> float:
    """Seconds to read and sha256 every file (local paths or s3:// URIs), one process."""
    import hashlib

    from isnetflow.dicom.source import is_s3, read_bytes

    t0 = time.perf_counter()
    for uri in uris:
        if is_s3(uri):
            hashlib.sha256(read_bytes(uri)).hexdigest()
        else:
            with open(uri, "rb") as f:
                hashlib.file_digest(f, "sha256").hexdigest()
    return time.perf_counter() - t0


def _one_process(uris: list[str], cfg: ValidateConfig, tmp: Path) -> float:
    """Seconds for the stage's per-file work (fetch, checks, normalize, write) in this process."""
    from isnetflow.validation.files import FileTask, process_file

    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, uri in enumerate(uris):
        process_file(FileTask(i, uri, uri, None, None), cfg, str(tmp))
    return time.perf_counter() - t0


def _synthetic_cohort(
    out: Path, n: int, size: int, unique: int, seed: int, transfer_syntax: str | None = None
) -> tuple[str, str]:
    """``n`` files: ``unique`` rendered images, then copies of them with new UIDs (same label, patient,
    site), all re-encoded in ``transfer_syntax`` when given. Returns the DICOM folder and labels.csv."""
    import pydicom
    from pydicom.uid import generate_uid

    from isnetflow.synth import generate_cohort
    from isnetflow.synth.cohort import UID_ROOT

    u = max(1, min(n, unique))
    generate_cohort(SynthConfig(n=u, size=size, seed=seed, workers=0), out, progress=False)
    labels = out / "labels.csv"
    with labels.open(newline="") as f:
        rows = list(csv.DictReader(f))
    extra = []
    for k in range(n - u):
        src = rows[k % u]
        ds = pydicom.dcmread(out / src["path"])
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(ds, kw, generate_uid(prefix=UID_ROOT, entropy_srcs=[str(seed), "bench", kw, str(k)]))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        rel = str(Path(src["path"]).parent / f"{ds.SOPInstanceUID}.dcm")
        ds.save_as(out / rel, enforce_file_format=True)
        extra.append({**src, "path": rel})
    with labels.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(rows[0])).writerows(extra)
    if transfer_syntax is not None:
        for row in rows + extra:
            path = out / row["path"]
            ds = pydicom.dcmread(path)
            ds.compress(transfer_syntax)
            ds.save_as(path, enforce_file_format=True)
    return str(out / "dicom"), str(labels)


def bench_ingest(
    n: int = 400,
    size: int = 1024,
    *,
    image_size: int | None = None,
    input: str | None = None,
    labels: str | None = None,
    workers: int = 0,
    seed: int = 0,
    repeats: int = 3,
    unique: int = 60,
    transfer_syntax: str = "explicit",
) -> dict[str, Any]:
    """Time the validate stage, its per-file work in one process and the bare loop; see the module doc.

    ``size`` is the side of the synthetic input images; ``image_size`` the side of the normalized
    output images (default: :class:`ValidateConfig`'s, the training size); ``transfer_syntax`` one of
    :data:`TRANSFER_SYNTAXES` (synthetic input only).
    """
    if transfer_syntax not in TRANSFER_SYNTAXES:
        choices = sorted(TRANSFER_SYNTAXES)
        raise ValueError(f"transfer_syntax must be one of {choices}, got {transfer_syntax!r}")
    if input is not None and transfer_syntax != "explicit":
        raise ValueError("transfer_syntax re-encodes the synthetic cohort; it cannot apply to --input")
    from isnetflow.dicom.source import list_files, read_bytes, resolve
    from isnetflow.validation.dataset import validate_tree

    # the copies are the same images by construction: every file is to validate, as a distinct one would
    cfg = ValidateConfig(
        workers=workers, duplicate_images="keep", **({"image_size": image_size} if image_size else {})
    )
    synthetic = input is None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="isnetflow-bench-") as tmp:
        if input is None:
            input, labels = _synthetic_cohort(
                Path(tmp) / "cohort", n, size, unique, seed, TRANSFER_SYNTAXES[transfer_syntax]
            )
        skip = resolve(labels) if labels is not None else None
        files = [f.uri for f in list_files(input, exclude=cfg.exclude) if f.uri != skip]
        n_bytes = sum(len(read_bytes(uri)) for uri in files)  # also warms the page cache for everyone
        validate_tree(cfg, input, Path(tmp) / "warm", labels=labels)  # imports, GX, worker start method
        _bare_loop(files[: min(len(files), 20)])

        bare_runs: list[float] = []
        stage_runs: list[dict[str, Any]] = []
        one_runs: list[float] = []
        hash_runs: list[float] = []
        bare_failed = 0
        for i in range(repeats):
            seconds, bare_failed = _bare_loop(files)
            bare_runs.append(seconds)
            stage_runs.append(validate_tree(cfg, input, Path(tmp) / f"out{i}", labels=labels).summary)
            one_runs.append(_one_process(files, cfg, Path(tmp) / f"one{i}"))
            hash_runs.append(_hash_loop(files))
    load_after = os.getloadavg()

    k = len(files)
    walls = [s["wall_seconds"] for s in stage_runs]
    per_file = [s["per_file_seconds"] for s in stage_runs]
    bare, wall, phase, one, hashing = min(bare_runs), min(walls), min(per_file), min(one_runs), min(hash_runs)
    best_run = stage_runs[walls.index(wall)]
    effective_workers = resolve_workers(workers)
    fps = {
        "bare": k / bare,
        "validate": k / wall,
        "phase": k / phase,
        "one": k / one,
        "sha256": k / hashing,
    }
    return {
        "files": k,
        "transfer_syntax": transfer_syntax if synthetic else None,
        "image_size": size if synthetic else None,
        "unique_images": min(n, unique) if synthetic else None,
        "output_size": cfg.image_size,
        "mean_file_bytes": round(n_bytes / max(1, k)),
        "valid": best_run["counts"]["valid"],
        "cores": os.cpu_count(),
        "workers": effective_workers,
        "load_average_1min": round(load_after[0], 2),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "bare_dcmread_files_per_s": round(fps["bare"], 1),
        "bare_failed": bare_failed,
        "validate_files_per_s": round(fps["validate"], 1),
        "ratio": round(fps["validate"] / fps["bare"], 3),
        "per_file_phase_files_per_s": round(fps["phase"], 1),
        "ratio_per_file_phase": round(fps["phase"] / fps["bare"], 3),
        "validate_1proc_files_per_s": round(fps["one"], 1),
        "ratio_1proc": round(fps["one"] / fps["bare"], 3),
        "pool_speedup": round(fps["phase"] / fps["one"], 2),
        "sha256_files_per_s": round(fps["sha256"], 1),
        "ceiling_ratio": round(effective_workers * bare / (bare + hashing), 3),
        "fixed_seconds": round(wall - best_run["per_file_seconds"], 3),
        "validate_seconds": wall,
        "per_file_phase_seconds": phase,
        "one_process_seconds": round(one, 3),
        "bare_seconds": round(bare, 3),
        "repeats": repeats,
        "runs": {
            "bare_seconds": [round(x, 3) for x in bare_runs],
            "validate_seconds": walls,
            "per_file_phase_seconds": per_file,
            "one_process_seconds": [round(x, 3) for x in one_runs],
            "sha256_seconds": [round(x, 3) for x in hash_runs],
            "ratio_median": round(statistics.median(bare_runs) / statistics.median(walls), 3),
        },
    }
