"""Per-file validation: one source file -> one manifest row (and its normalized image).

This is what the validate stage runs in its worker processes, and what the model server's explain path
runs on a single uploaded DICOM file, so both apply the same image checks and the same normalization
(explain leaves out the checks that concern the data set: identifiers, site, PHI; ``checks``). The
dataset-level decisions (labels join, duplicates, leakage) and the process pool stay in
:mod:`isnetflow.validation.dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from isnetflow.config import ValidateConfig
from isnetflow.dicom import analyze, first_error, to_uint16, warnings_of
from isnetflow.dicom.issues import CheckProfile, Issue
from isnetflow.dicom.picture import analyze_picture, is_picture
from isnetflow.dicom.source import DICOM_SUFFIXES, SourceError, read_bytes
from isnetflow.validation.duplicates import image_keys
from isnetflow.validation.manifest import HEADER_COLUMNS

__all__ = [
    "ISSUE_SEPARATOR",
    "FileTask",
    "init_worker",
    "issue_columns",
    "process_file",
]

#: How the manifest's ``warnings`` and ``issues`` columns join several messages.
ISSUE_SEPARATOR = " | "


@dataclass(frozen=True)
class FileTask:
    """One file to check: where it is, its row index, and what the labels say of it."""

    index: int
    uri: str
    relpath: str
    patient_id: str | None
    site: str | None
    #: named like a DICOM file or listed in labels.csv: if it does not parse, it is quarantined
    claims_dicom: bool = True
    #: listed in labels.csv: a PNG/JPEG file is then a picture input (:mod:`isnetflow.dicom.picture`)
    listed: bool = False


def init_worker(env: dict[str, str]) -> None:
    """Worker initializer: forkserver children inherit the server's environment, not the caller's, so
    the caller's ``AWS_*`` variables (S3 endpoint, credentials) are replayed exactly. Then
    :func:`_keep_freed_memory`."""
    for key in [k for k in os.environ if k.startswith("AWS_") and k not in env]:
        del os.environ[key]
    os.environ.update(env)
    _keep_freed_memory()


#: glibc ``mallopt`` parameters (malloc.h) and the values the workers use.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_WORKER_MMAP_THRESHOLD = 128 << 20  # a 4096 px float32 canvas is 64 MiB
_WORKER_TRIM_THRESHOLD = 512 << 20


def _keep_freed_memory() -> bool:
    """Let this worker reuse freed memory instead of handing it back to the kernel after every file.

    Each file needs a few buffers of 2-64 MB (file bytes, decoded pixels, the float canvas). glibc
    serves blocks that large with fresh ``mmap`` calls, or trims them off the heap when freed, so
    every file faults its pages in again. Measured on 1024 px files in one process: 1,500 page faults
    and 2.8 ms of kernel time per RLE file (8.9 ms in all; 6.6 ms with these settings), 4.3 -> 3.6 ms
    per uncompressed file. Workers live for one run, and what they keep is bounded by one file's
    buffers. Only pool workers do this: the calling process (a CLI run that goes on to train) keeps
    glibc's defaults. Returns whether the settings took (False off glibc).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _WORKER_MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, _WORKER_TRIM_THRESHOLD) == 1 and ok


def issue_columns(issues: Sequence[Issue]) -> dict[str, Any]:
    """The manifest columns that ``issues`` set: ``status`` (quarantined on the first error, else valid),
    that error's ``reason`` and ``reason_code``, and the ``warnings`` and all ``issues``, joined."""
    err = first_error(issues)
    return {
        "status": "quarantined" if err else "valid",
        "reason": err.message if err else "",
        "reason_code": err.code if err else "",
        "warnings": ISSUE_SEPARATOR.join(i.message for i in warnings_of(issues)),
        "issues": ISSUE_SEPARATOR.join(i.message for i in issues),
    }


def _ignore_not_dicom(row: dict[str, Any], task: FileTask) -> None:
    """A file that is not DICOM becomes ``ignored`` unless it claims to be DICOM (then it stays a
    quarantined ``not_dicom``: a damaged DICOM); a DICOMDIR (a file-set index) is always ignored."""
    code = row["reason_code"]
    stray = code == "dicomdir" or (code == "not_dicom" and not task.claims_dicom)
    if row["status"] != "quarantined" or not stray:
        return
    row["status"] = "ignored"
    if code == "not_dicom":
        row["reason"] = f"{row['reason']}; not named {'/'.join(DICOM_SUFFIXES)} nor listed in the labels"


def _write_image(image: np.ndarray, path: Path, cfg: ValidateConfig) -> None:
    stored = to_uint16(image)
    if cfg.image_format == "npy":
        np.save(path, stored, allow_pickle=False)
    else:
        Image.fromarray(stored).save(path, format="PNG", compress_level=cfg.png_compress_level)


def process_file(
    task: FileTask, cfg: ValidateConfig, tmp_dir: str, *, checks: CheckProfile = "validate"
) -> dict[str, Any]:
    """Fetch, check and normalize one file; write its image to ``tmp_dir/<index>.<ext>`` when valid.

    ``checks``: whose checks apply (:data:`~isnetflow.dicom.issues.CHECK_PROFILES`): the validate stage's
    (every one) or ``explain``'s (only those that concern the image itself).

    A PNG/JPEG file listed in labels.csv (``task.listed``) is read as a picture
    (:func:`~isnetflow.dicom.picture.analyze_picture`); every other file as DICOM.

    Returns the file's manifest row (plus ``_tmp_image``, the written image, and ``_phash``, what the
    duplicate check compares, when valid). Never raises
    for a bad file: what is wrong with it is in ``status`` / ``reason`` / ``reason_code``."""
    row: dict[str, Any] = {"path": task.relpath, "uri": task.uri, "index": task.index}
    try:
        data = read_bytes(task.uri, max_bytes=cfg.max_file_bytes)
    except SourceError as exc:
        code = "too_large" if "too large" in str(exc) else "unreadable"
        msg = str(exc).split(": ", 1)[-1]
        row.update(issue_columns([Issue(code, f"cannot read file: {msg}")]))
        row.update(patient_id=task.patient_id, site=task.site)
        return row
    if task.listed and is_picture(data, task.relpath):
        a = analyze_picture(data, cfg, patient_id=task.patient_id, site=task.site, checks=checks)
    else:
        a = analyze(data, cfg, patient_id=task.patient_id, site=task.site, checks=checks)
    row.update({k: a.fields.get(k) for k in HEADER_COLUMNS})
    row.update(patient_id=a.fields.get("patient_id"), site=a.fields.get("site"))
    row.update(sha256=a.sha256, file_bytes=a.n_bytes)
    issues = list(a.issues)
    if a.ok and a.image is not None and a.letterbox is not None and a.window is not None:
        target = Path(tmp_dir) / f"{task.index}.{cfg.image_format}"
        try:
            _write_image(a.image, target, cfg)
            row["_tmp_image"] = str(target)
            box = a.letterbox.to_dict()
            row.update({k: box[k] for k in ("pad_top", "pad_bottom", "pad_left", "pad_right", "scale")})
            row.update(image_size=cfg.image_size, window_low=a.window[0], window_high=a.window[1])
            row.update(image_keys(a.image))  # compared across the input (validation.duplicates)
        except OSError as exc:
            issues.append(Issue("write_failed", f"cannot write normalized image: {exc.strerror or exc}"))
    row.update(issue_columns(issues))
    _ignore_not_dicom(row, task)
    return row
