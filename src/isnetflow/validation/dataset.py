"""Validate a dataset: every file found -> valid | quarantined | ignored (+ reason), normalized images, GX
report. The validate and ingest stages run this (:func:`validate_tree`).

Outputs under ``out``::

    manifest.csv      one row per file found under the input (and per labels.csv entry missing on disk),
                      sorted by path
    images/           <SOPInstanceUID>.png (16-bit) or .npy (uint16): normalized, letterboxed images
    validation.json   counts by status / reason / site, class balance per site (the site/label confound),
                      pass rate, GX results per expectation, verdict
    validation.html   the GX validation result rendered by GX's data-docs renderer (+ a summary table)

Every file of the input tree gets a row, with one of three statuses:

* ``valid``: a DICOM image (or a PNG/JPEG listed in labels.csv: :mod:`isnetflow.dicom.picture`) that
  passed every check (normalized into ``images/``);
* ``quarantined``: an input image that failed a check (``reason`` / ``reason_code`` say which), a file
  that claims to be DICOM (named ``*.dcm``/``.dicom``/``.dic``, or listed in labels.csv) but does not
  parse, or a labels.csv entry missing on disk;
* ``ignored``: a file that is not an input image, with the rule as ``reason_code``
  (:data:`~isnetflow.dicom.issues.IGNORED_CODES`): ``excluded`` (a ``validate.exclude`` pattern, named
  in the reason), ``labels_file`` (the labels CSV inside the input), ``provided_mask`` (under the
  provided masks folder: ``provided_masks``, by default the ``masks/`` folder beside the labels file),
  ``own_output`` (this stage's output folder inside the input), ``not_dicom`` (a file that is not DICOM
  and does not claim to be) and ``dicomdir`` (a DICOMDIR: a file-set index).

The run *passes* when the pass rate (valid / (valid + quarantined); ignored rows never count) is at
least ``cfg.min_pass_rate`` and the expectation suite succeeds. Quarantining a file is not a failure;
nor is a site whose images hold (nearly) one class, unless ``cfg.confound`` is ``fail``: by default it
is a warning naming the site/label confound (:mod:`isnetflow.validation.balance`).
Fatal problems with the inputs themselves (input folder missing, labels file unreadable) raise
:class:`ValidateError`.

Per-file work (fetch, checks, decode, normalize, write the image) runs in a process pool; dataset-level
decisions (labels join, duplicate UIDs, duplicate images (:mod:`isnetflow.validation.duplicates`), patient
leakage) and the GX suite run in this process.
"""

from __future__ import annotations

import functools
import html
import logging
import math
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from isnetflow import __version__
from isnetflow.artifacts.validation import VALIDATION_FILE, ValidationSummary
from isnetflow.config import ValidateConfig, resolve_workers
from isnetflow.dicom.issues import Issue
from isnetflow.dicom.source import (
    DICOM_SUFFIXES,
    SourceError,
    SourceFile,
    is_s3,
    join,
    parent,
    read_bytes,
    relative_to,
    resolve,
    scan_files,
)
from isnetflow.validation.balance import balance_html, class_balance
from isnetflow.validation.duplicates import quarantine_image_duplicates
from isnetflow.validation.files import ISSUE_SEPARATOR, FileTask, init_worker, issue_columns, process_file
from isnetflow.validation.manifest import (
    MANIFEST_COLUMNS,
    with_integer_columns,
    write_manifest,
)

log = logging.getLogger(__name__)

__all__ = ["MANIFEST_COLUMNS", "ValidateError", "ValidateResult", "validate_tree"]

_TMP = ".incoming"


class ValidateError(Exception):
    """The stage cannot run at all (bad input location, unreadable labels): a one-line message."""


@dataclass
class ValidateResult:
    """What :func:`validate_tree` produced: the manifest (also on disk) and the summary in validation.json."""

    out: Path
    manifest: pd.DataFrame
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        """Whether the data set passed validation (``summary["passed"]``)."""
        return bool(self.summary["passed"])

    @property
    def failure(self) -> str | None:
        """One-line reason when the run did not pass."""
        failure: str | None = self.summary["failure"]
        return failure


def _pool_context() -> multiprocessing.context.BaseContext:
    """How worker processes start.

    ``fork`` is the cheapest (workers inherit the imported modules) and safe while this process has a
    single thread. With other threads alive (a progress-bar monitor, an S3 test server, ...) a fork
    could copy a lock held by one of them, so ``forkserver`` is used instead, with this module
    preloaded; elsewhere the platform default (spawn).
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context()


class _Bar(tqdm):
    """A progress bar without tqdm's monitor thread.

    tqdm starts a (daemon) monitor thread with its first bar, even a disabled one, and it lives until
    the process exits. Any later run in the same process would then see a second thread and start its
    workers with ``forkserver`` instead of ``fork`` (see :func:`_pool_context`), where every worker
    re-imports the main module before its first file: seconds, not milliseconds.
    """

    monitor_interval = 0


def _progress(items: Iterator[dict[str, Any]], total: int, progress: bool) -> Iterator[dict[str, Any]]:
    if not progress:
        return items
    return iter(_Bar(items, total=total, desc="validate", unit="file", mininterval=0.5))


def _map(
    tasks: list[FileTask], cfg: ValidateConfig, tmp_dir: Path, progress: bool
) -> Iterator[dict[str, Any]]:
    """Run :func:`process_file` over ``tasks``: in this process for tiny inputs, else in a process pool.

    The pool has one worker per available core, started once per run; tasks go out in chunks
    (about 8 per worker) so the per-task messaging is amortized, and each worker writes its images
    itself: only the small row dicts come back. A worker that dies (a decoder crash, the kernel's
    OOM killer) does not end the stage: :func:`_pool_rows` finds the file it was on and quarantines it.
    """
    fn = functools.partial(process_file, cfg=cfg, tmp_dir=str(tmp_dir))
    workers = resolve_workers(cfg.workers)
    workers = max(1, min(workers, math.ceil(len(tasks) / 16)))  # tiny inputs are faster in-process
    if workers == 1:
        yield from _progress(map(fn, tasks), len(tasks), progress)
        return
    chunk = max(1, min(32, len(tasks) // (workers * 8)))
    yield from _progress(_pool_rows(tasks, cfg, tmp_dir, workers, chunk), len(tasks), progress)


def _running_marker(tmp_dir: str | Path, task: FileTask) -> Path:
    return Path(tmp_dir) / f".running-{task.index}"


def _process_marked(task: FileTask, cfg: ValidateConfig, tmp_dir: str) -> dict[str, Any]:
    """:func:`process_file`, leaving a marker file while it runs: a worker that dies leaves its file named."""
    marker = _running_marker(tmp_dir, task)
    marker.touch()
    row = process_file(task, cfg, tmp_dir)
    marker.unlink(missing_ok=True)
    return row


def _process_chunk(chunk: list[FileTask], cfg: ValidateConfig, tmp_dir: str) -> list[dict[str, Any]]:
    return [_process_marked(t, cfg, tmp_dir) for t in chunk]


def _crashed(task: FileTask) -> dict[str, Any]:
    row: dict[str, Any] = {"path": task.relpath, "uri": task.uri, "index": task.index}
    row.update(patient_id=task.patient_id, site=task.site)
    message = "the validation worker process died while checking this file, twice (the second time alone)"
    row.update(issue_columns([Issue("worker_crashed", message)]))
    return row


def _pool_rows(
    tasks: list[FileTask], cfg: ValidateConfig, tmp_dir: Path, workers: int, chunk: int
) -> Iterator[dict[str, Any]]:
    """The rows of ``tasks`` from process pools that survive the death of a worker.

    When a worker dies, the pool breaks and every unfinished chunk fails. The files whose marker is left
    (:func:`_process_marked`) were being checked at that moment: each is retried alone, in a pool of one
    worker, and quarantined as ``worker_crashed`` if it kills that worker too; the other files of the
    failed chunks go round again. A finished chunk's rows are never lost; only the files of a chunk that
    failed are checked again.
    """
    from concurrent.futures.process import BrokenProcessPool

    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    todo, alone = list(tasks), list[FileTask]()
    while todo or alone:
        if todo:
            batches, n_workers = [todo[i : i + chunk] for i in range(0, len(todo), chunk)], workers
            todo = []
        else:
            batches, n_workers = [[alone.pop(0)]], 1
        suspects, broke = 0, False
        with ProcessPoolExecutor(
            max_workers=n_workers, mp_context=_pool_context(), initializer=init_worker, initargs=(env,)
        ) as pool:
            futures = [(b, pool.submit(_process_chunk, b, cfg, str(tmp_dir))) for b in batches]
            for batch, future in futures:
                try:
                    yield from future.result()
                except BrokenProcessPool:
                    broke = True
                    if n_workers == 1:  # a suspect alone killed its worker again
                        _running_marker(tmp_dir, batch[0]).unlink(missing_ok=True)
                        log.warning("%s: the validation worker died on this file; quarantined", batch[0].uri)
                        yield _crashed(batch[0])
                        suspects += 1
                        continue
                    for task in batch:
                        marker = _running_marker(tmp_dir, task)
                        if marker.exists():
                            marker.unlink()
                            alone.append(task)
                            suspects += 1
                        else:
                            todo.append(task)
        if broke and not suspects:
            raise ValidateError("validation worker processes die before checking any file (see the log)")


# --------------------------------------------------------------------------------------------------
# Dataset-level decisions (this process)
# --------------------------------------------------------------------------------------------------


def _load_labels(labels: str | os.PathLike[str]) -> tuple[str, pd.DataFrame]:
    from isnetflow.validation import LabelsError, parse_labels

    uri = resolve(labels)
    try:
        data = read_bytes(uri)
    except SourceError as exc:
        raise ValidateError(f"{labels}: cannot read labels file ({str(exc).split(': ', 1)[-1]})") from exc
    try:
        return uri, parse_labels(data, str(labels))
    except LabelsError as exc:
        raise ValidateError(str(exc)) from exc


def _quarantine(row: dict[str, Any], issue: Issue) -> None:
    """Add a dataset-level error to a row; it becomes the reason unless the row already had one."""
    if row["status"] == "valid":
        row.update(status="quarantined", reason=issue.message, reason_code=issue.code)
    row["issues"] = ISSUE_SEPARATOR.join(x for x in (row.get("issues") or "", issue.message) if x)


def _labels_by_uri(table: pd.DataFrame, labels_uri: str) -> dict[str, dict[str, Any]]:
    """labels.csv records keyed by the resolved location of their file (computed once per run)."""
    base = parent(labels_uri)
    records = [{str(k): v for k, v in rec.items()} for rec in table.to_dict("records")]
    return {join(base, str(p)): rec for p, rec in zip(table["path"], records, strict=True)}


def _apply_labels(
    rows: list[dict[str, Any]],
    by_uri: dict[str, dict[str, Any]] | None,
    labels_uri: str | None,
    root: str,
) -> list[dict[str, Any]]:
    """Join labels onto rows; quarantine unlabelled files; add rows for labels missing on disk.

    Ignored rows stay ignored (a file an ignore rule matches is not an input image even when labels.csv
    lists it: its reason then says so, and it does not come back as ``missing_file``)."""
    if by_uri is None or labels_uri is None:
        return rows
    base = parent(labels_uri)
    seen: set[str] = set()
    name = labels_uri.rsplit("/", 1)[-1]
    for row in rows:
        rec = by_uri.get(row["uri"])
        if row["status"] == "ignored":  # not an input image, even when listed: the reason says so
            if rec is not None:
                seen.add(row["uri"])
                row["reason"] = f"{row['reason']} (listed in {name})"
            continue
        if rec is None:
            _quarantine(row, Issue("no_label", f"no label (not listed in {name})"))
            continue
        seen.add(row["uri"])
        row["label"] = rec["label"]
        row["mask"] = join(base, rec["mask"]) if rec.get("mask") else None
        if rec.get("role"):
            row["role"] = rec["role"]
    for uri, rec in by_uri.items():
        if uri in seen:
            continue
        row = {
            "path": relative_to(uri, root),
            "uri": uri,
            "label": rec["label"],
            "patient_id": rec.get("patient_id"),
            "site": rec.get("site"),
            "role": rec.get("role"),
            "mask": join(base, rec["mask"]) if rec.get("mask") else None,
        }
        row.update(issue_columns([Issue("missing_file", "listed in labels but not found")]))
        rows.append(row)
    return rows


def _assign_roles(rows: list[dict[str, Any]], cfg: ValidateConfig) -> None:
    internal, external = set(cfg.internal_sites), set(cfg.external_sites)
    for row in rows:
        if row.get("role"):
            continue
        site = row.get("site")
        row["role"] = "internal" if site in internal else "external" if site in external else None


def _quarantine_duplicates(rows: list[dict[str, Any]]) -> None:
    first: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r["path"]):
        uid = row.get("sop_instance_uid")
        if not uid:
            continue
        if uid in first:
            _quarantine(row, Issue("duplicate_uid", f"duplicate SOPInstanceUID (first: {first[uid]})"))
        else:
            first[uid] = row["path"]


def _quarantine_leakage(rows: list[dict[str, Any]], cfg: ValidateConfig) -> dict[str, str]:
    from isnetflow.validation import leaking_patients

    valid = pd.DataFrame([r for r in rows if r["status"] == "valid"], columns=["patient_id", "site", "role"])
    leaks = leaking_patients(valid)
    if cfg.leakage_action == "quarantine":
        for row in rows:
            msg = leaks.get(str(row.get("patient_id"))) if row["status"] == "valid" else None
            if msg:
                _quarantine(row, Issue("patient_leakage", msg))
    return leaks


def _finalize_images(rows: list[dict[str, Any]], out: Path, cfg: ValidateConfig) -> None:
    """Move valid rows' images to images/<SOPInstanceUID>.<ext>; drop the others."""
    images = out / "images"
    for row in rows:
        row.pop("_phash", None)
        tmp = row.pop("_tmp_image", None)
        if tmp is None:
            continue
        if row["status"] == "valid":
            name = f"{row['sop_instance_uid']}.{cfg.image_format}"
            os.replace(tmp, images / name)
            row["image"] = f"images/{name}"
        else:
            Path(tmp).unlink(missing_ok=True)
            for k in ("image_size", "pad_top", "pad_bottom", "pad_left", "pad_right", "scale"):
                row[k] = None
    shutil.rmtree(images / _TMP, ignore_errors=True)


def _prepare_out(out: Path) -> Path:
    images = out / "images"
    if images.exists():
        if (out / "manifest.csv").exists():
            shutil.rmtree(images)  # our own previous output
        elif any(images.iterdir()):
            raise ValidateError(
                f"{images}: exists and is not from a previous validate run; refusing to overwrite"
            )
    (images / _TMP).mkdir(parents=True, exist_ok=True)
    return images / _TMP


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _site_summary(manifest: pd.DataFrame, cfg: ValidateConfig) -> dict[str, Any]:
    sites: dict[str, Any] = {}
    manifest = manifest[manifest["status"] != "ignored"]  # not images: they belong to no site
    for site, g in manifest.groupby(manifest["site"].fillna("(unknown)"), sort=True):
        valid = g[g["status"] == "valid"]
        roles = sorted(r for r in g["role"].dropna().unique() if r)
        sites[str(site)] = {
            "role": roles[0] if len(roles) == 1 else (roles or None),
            "files": len(g),
            "valid": len(valid),
            "quarantined": int((g["status"] == "quarantined").sum()),
            "patients": int(valid["patient_id"].nunique()),
            "classes": {
                str(k): int(v) for k, v in valid["label"].dropna().value_counts().sort_index().items()
            },
            "photometric": sorted(str(p) for p in valid["photometric_interpretation"].dropna().unique()),
        }
    return sites


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in series.value_counts().sort_index().items()}


def _summary_html(summary: dict[str, Any]) -> str:
    def table(title: str, mapping: dict[str, Any]) -> str:
        body = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
            for k, v in mapping.items()
        )
        return f"<h4>{html.escape(title)}</h4><table class='table table-sm'>{body}</table>"

    verdict = "PASSED" if summary["passed"] else f"FAILED: {summary['failure']}"
    sites = {
        s: f"{v['valid']} valid / {v['files']} files, role={v['role']}, classes={v['classes']}"
        for s, v in summary["sites"].items()
    }
    return (
        "<div class='container' style='margin-top:1em'>"
        f"<h2>isnetflow validate: {html.escape(verdict)}</h2>"
        f"<p>input {html.escape(str(summary['input']))}; pass rate {summary['pass_rate']:.3f} "
        f"(threshold {summary['min_pass_rate']})</p>"
        + balance_html(summary.get("class_balance"))
        + table("Files by status", summary["counts"])
        + table("Quarantine reasons", summary["reasons"] or {"(none)": 0})
        + table("Ignored files (the rule)", summary["ignored_reasons"] or {"(none)": 0})
        + table("Warnings", summary["warnings"] or {"(none)": 0})
        + table("Sites", sites)
        + "<h3>great-expectations validation result</h3></div>"
    )


def _write_reports(out: Path, manifest: pd.DataFrame, summary: dict[str, Any], gx_html: str) -> None:
    write_manifest(manifest, out)
    ValidationSummary.of(summary).write(out / VALIDATION_FILE)
    head = _summary_html(summary)
    if "<body>" in gx_html:
        page = gx_html.replace("<body>", "<body>" + head, 1)
    else:
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>isnetflow validate</title></head>"
            f"<body>{head}</body></html>"
        )
    (out / "validation.html").write_text(page)


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def validate_tree(
    cfg: ValidateConfig,
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    provided_masks: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> ValidateResult:
    """Validate every file under ``input`` (local folder or ``s3://bucket/prefix``) into ``out``.

    ``labels`` (local path or ``s3://`` URI) follows the labels.csv contract
    (:mod:`isnetflow.validation.labels`). ``provided_masks`` is the folder of provided lung masks
    (default: the ``masks/`` folder beside ``labels``, when labels are given); the files under it that
    lie inside the input tree, and the files labels.csv names in its ``mask`` column, are listed as
    ignored (``provided_mask``). Returns the manifest and summary; see the module docstring for the
    files written. Raises :class:`ValidateError` only for unusable inputs.
    """
    from isnetflow.validation import run_suite

    t0 = time.perf_counter()
    root = resolve(input)
    out = Path(out)
    labels_uri, table = _load_labels(labels) if labels is not None else (None, None)
    try:
        found, excluded = scan_files(root, exclude=cfg.exclude)
    except SourceError as exc:
        raise ValidateError(str(exc)) from exc
    root_dir = root if is_s3(root) or Path(root).is_dir() else parent(root)
    if not found and not excluded and (table is None or table.empty):
        raise ValidateError(f"{input}: no input files found")

    by_uri = _labels_by_uri(table, labels_uri) if table is not None and labels_uri is not None else None
    overrides = by_uri or {}
    if provided_masks is None and labels_uri is not None:
        provided_masks = join(parent(labels_uri), "masks")
    side = _SideFiles(out, labels_uri, provided_masks, by_uri)
    ignored: list[dict[str, Any]] = []
    files: list[SourceFile] = []
    for f in found:
        issue = side.rule(f.uri)
        if issue is None:
            files.append(f)
        else:
            ignored.append(_ignored_row(f, issue))
    for e in excluded:
        issue = side.rule(e.file.uri) or Issue(
            "excluded", f"excluded by validate.exclude pattern '{e.pattern}' (matches {e.component})"
        )
        ignored.append(_ignored_row(e.file, issue))
    tasks = [
        FileTask(
            index=i,
            uri=f.uri,
            relpath=f.relpath,
            patient_id=overrides.get(f.uri, {}).get("patient_id"),
            site=overrides.get(f.uri, {}).get("site"),
            claims_dicom=f.relpath.lower().endswith(DICOM_SUFFIXES) or f.uri in overrides,
            listed=f.uri in overrides,
        )
        for i, f in enumerate(files)
    ]
    out.mkdir(parents=True, exist_ok=True)
    tmp_dir = _prepare_out(out)
    t_files = time.perf_counter()
    rows = list(_map(tasks, cfg, tmp_dir, progress)) + ignored
    per_file_seconds = time.perf_counter() - t_files

    rows = _apply_labels(rows, by_uri, labels_uri, root_dir)
    _assign_roles(rows, cfg)
    _quarantine_duplicates(rows)
    if cfg.duplicate_images == "quarantine":
        quarantine_image_duplicates(rows, _quarantine)  # the same radiograph twice (validation.duplicates)
    leaks = _quarantine_leakage(rows, cfg)
    _finalize_images(rows, out, cfg)

    manifest = pd.DataFrame(rows).reindex(columns=MANIFEST_COLUMNS)
    manifest = manifest.sort_values("path", kind="stable").reset_index(drop=True)
    manifest = with_integer_columns(manifest)  # 320, not 320.0, beside quarantined rows' empty cells
    manifest = manifest.astype(object).where(manifest.notna(), None)
    valid = manifest[manifest["status"] == "valid"]
    outcome = run_suite(valid, cfg, has_labels=table is not None)
    balance = class_balance(valid, cfg) if table is not None else None  # the site/label confound
    confound = balance["line"] if balance is not None else None

    n = len(manifest)
    # ignored files (sidecars, README, DICOMDIR, labels.csv, masks, ...) are listed, but are not input
    # images: the pass rate is over the valid and quarantined rows only
    is_ignored = manifest["status"] == "ignored"
    n_ignored = int(is_ignored.sum())
    n_images = n - n_ignored
    pass_rate = len(valid) / n_images if n_images else 0.0
    failures = []
    if not n_images:
        failures.append(f"no DICOM images among the {n} files found ({n_ignored} ignored)")
    elif pass_rate < cfg.min_pass_rate:
        quarantined = manifest[manifest["status"] == "quarantined"]
        top = quarantined["reason_code"].value_counts().head(3)
        failures.append(
            f"pass rate {pass_rate:.3f} < {cfg.min_pass_rate:g} "
            f"({len(quarantined)} of {n_images} DICOM files quarantined; "
            + ", ".join(f"{k} x{v}" for k, v in top.items())
            + ")"
        )
    gx_failure = outcome.failure_summary()
    if gx_failure:
        failures.append(gx_failure)
    if confound and cfg.confound == "fail":
        failures.append(confound)
    elif confound:
        log.warning("validate: %s", confound)
    wall = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "generator": f"isnetflow {__version__}",
        "input": root,
        "labels": labels_uri,
        "out": str(out),
        "files": n,
        "counts": {"valid": len(valid), "quarantined": n_images - len(valid), "ignored": n_ignored},
        "not_images": n_ignored,  # rows left out of the pass rate (= counts.ignored; kept for old readers)
        "pass_rate": round(pass_rate, 6),
        "min_pass_rate": cfg.min_pass_rate,
        "reasons": _counts(manifest.loc[manifest["status"] == "quarantined", "reason_code"]),
        "reason_messages": _counts(manifest.loc[manifest["status"] == "quarantined", "reason"]),
        "ignored_reasons": _counts(manifest.loc[is_ignored, "reason_code"]),
        "warnings": _warning_counts(rows),
        "sites": _site_summary(manifest, cfg),
        "class_balance": balance,  # per site, and the confounded sites (validation.balance); None: no labels
        "patient_leakage": leaks,
        "expectations": {
            "success": outcome.success,
            "statistics": outcome.statistics,
            "results": outcome.results,
        },
        "images": {"dir": "images", "size": cfg.image_size, "format": cfg.image_format},
        "passed": not failures,
        "failure": "; ".join(failures) if failures else None,
        "wall_seconds": round(wall, 3),
        "per_file_seconds": round(per_file_seconds, 3),
        "config": cfg.model_dump(mode="json"),
    }
    _write_reports(out, manifest, summary, outcome.html)
    log.info(
        "validate: %d files, %d ignored, %d valid (pass rate %.3f), expectations %s -> %s in %.1f s",
        n,
        n_ignored,
        len(valid),
        pass_rate,
        "passed" if outcome.success else "FAILED",
        out,
        wall,
    )
    return ValidateResult(out=out, manifest=manifest, summary=summary)


class _SideFiles:
    """The ignore rules for files beside the inputs: this stage's output folder, the labels file and the
    provided masks (their folder, and the files labels.csv names in its ``mask`` column)."""

    def __init__(
        self,
        out: Path,
        labels_uri: str | None,
        provided_masks: str | os.PathLike[str] | None,
        by_uri: dict[str, dict[str, Any]] | None,
    ) -> None:
        self.out_dir = str(out.resolve())
        self.out_prefix = self.out_dir + os.sep
        self.labels_uri = labels_uri
        self.masks_prefix: str | None = None
        if provided_masks is not None:
            masks = resolve(provided_masks)
            self.masks_prefix = masks.rstrip("/") + "/" if is_s3(masks) else masks.rstrip(os.sep) + os.sep
        self.masks_shown = str(provided_masks)
        base = parent(labels_uri) if labels_uri is not None else ""
        self.mask_uris = {join(base, str(r["mask"])) for r in (by_uri or {}).values() if r.get("mask")}

    def rule(self, uri: str) -> Issue | None:
        """The ignore rule for the file at ``uri``, or None when it is an input."""
        if uri.startswith(self.out_prefix):
            return Issue("own_output", f"in the output folder of this validation ({self.out_dir})")
        if uri == self.labels_uri:
            return Issue("labels_file", "the labels file of this validation")
        if self.masks_prefix is not None and uri.startswith(self.masks_prefix):
            return Issue("provided_mask", f"a provided lung mask (in {self.masks_shown})")
        if uri in self.mask_uris:
            return Issue("provided_mask", "a provided lung mask (named in the labels' mask column)")
        return None


def _ignored_row(f: SourceFile, issue: Issue) -> dict[str, Any]:
    """The manifest row of a file an ignore rule matches: never read, never counted in the pass rate."""
    return {
        "path": f.relpath,
        "uri": f.uri,
        "status": "ignored",
        "reason": issue.message,
        "reason_code": issue.code,
        "warnings": "",
        "issues": issue.message,
        "file_bytes": f.size,
    }


def _warning_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Warnings by kind (the message up to its first colon or parenthesis)."""
    counts: dict[str, int] = {}
    for row in rows:
        for w in (row.get("warnings") or "").split(ISSUE_SEPARATOR):
            if w:
                key = w.split(":")[0].split(" (")[0].strip()
                counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
