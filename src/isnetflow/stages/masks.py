"""Mask stage: lung masks for every valid image, QC'd; and ``isnetflow segment`` for loose files.

Pipeline stage (:func:`run`), from the validate stage's output folder::

    OUT/masks/<SOPInstanceUID>.png        accepted masks, 255 lung / 0 background, original resolution
    OUT/quarantine/<SOPInstanceUID>.png   masks that failed QC (kept for inspection, never used)
    OUT/mask_qc.csv                       one row per valid image: source, status, reason, QC measures
    OUT/gallery.png                       overlays, QC failures first (red frame)
    OUT/masks.json                        counts, reasons, the segmenter (architecture, sha256, version)

Where masks come from, in order: ``provided_masks/<SOPInstanceUID>.png`` (e.g. the synthetic cohort's
ground truth), the manifest's ``mask`` column (from labels.csv), else the segmenter. Predictions are made
on the validate stage's normalized images (the pixels the classifier will see) and mapped back to the
DICOM's rows x columns. In provided masks the 127 'ignore' value (devices over the lung) counts as lung.

:func:`segment_files` backs ``isnetflow segment``: DICOM or PNG/JPEG files in, ``<stem>.png`` masks at
each input's original resolution out, plus ``segment.csv`` (QC per file) and optional overlays.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from isnetflow.config import MaskConfig
from isnetflow.dicom.normalize import Letterbox
from isnetflow.masks import LungSegmenter, assess, assess_prediction
from isnetflow.masks.gallery import GalleryTile, overlay, write_gallery
from isnetflow.masks.io import LoadedImage, find_inputs, read_image, read_reference_mask, write_mask
from isnetflow.masks.qc import MaskQC
from isnetflow.registry.segmenter import load_segmenter
from isnetflow.validation.manifest import manifest_path, read_manifest

log = logging.getLogger(__name__)

__all__ = ["MasksResult", "load_model", "run", "segment_files"]

_QC_COLUMNS = [
    "area_fraction",
    "n_components",
    "lung_balance",
    "left_fraction",
    "fragment_fraction",
    "confidence",
    "mirror_agreement",
]


@dataclass
class MasksResult:
    """What :func:`run` produced: the QC table (also ``mask_qc.csv``) and the summary (``masks.json``)."""

    out: Path
    table: pd.DataFrame
    summary: dict[str, Any]


def load_model(cfg: MaskConfig, tracking_uri: str | None = None) -> LungSegmenter:
    """The segmenter named by ``cfg.model`` (shipped weights when None; MLflow URIs are downloaded)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seg = load_segmenter(cfg.model, tracking_uri=tracking_uri, batch_size=cfg.batch_size)
    seg.mirror_check = cfg.min_mirror_agreement is not None
    return seg


def _model_info(seg: LungSegmenter, cfg: MaskConfig, version: str | None) -> dict[str, Any]:
    return {
        "source": cfg.model or "shipped",
        "architecture": seg.spec.architecture,
        "image_size": seg.spec.image_size,
        "weights_sha256": seg.spec.weights_sha256,
        "registered_version": version,
    }


def _preview(image: np.ndarray, mask: np.ndarray, max_side: int = 768) -> np.ndarray:
    """Overlay RGB, downscaled so the longest side is at most ``max_side``."""
    step = max(1, int(np.ceil(max(image.shape) / max_side)))
    return overlay(image[::step, ::step], mask[::step, ::step])


# --------------------------------------------------------------------------------------------------
# isnetflow segment
# --------------------------------------------------------------------------------------------------


def _output_names(files: Sequence[Path], inputs: Sequence[str | Path]) -> list[str]:
    """``<stem>`` per file; when stems collide, the path relative to its input folder (without suffix)."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    roots = [Path(i).resolve() for i in inputs if Path(i).is_dir()]
    names = []
    for f in files:
        fr = f.resolve()
        root = next((r for r in roots if fr.is_relative_to(r)), fr.parent)
        names.append(str(fr.relative_to(root).with_suffix("")))
    if len(set(names)) != len(names):
        dup = [n for n, c in Counter(names).items() if c > 1]
        raise ValueError(f"several inputs map to the same output name, e.g. {dup[:3]}")
    log.warning("input stems collide: masks keep the input folders' layout under the output folder")
    return names


def segment_files(
    inputs: Sequence[str | Path],
    out: str | Path,
    cfg: MaskConfig | None = None,
    *,
    tracking_uri: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment DICOM / PNG / JPEG files (or folders of them) into ``out/<stem>.png``.

    Masks are written at each input's original resolution even when QC fails (``segment.csv`` says
    so). Unreadable inputs are reported in the table and skipped. With ``cfg.overlays`` an overlay PNG
    per image goes to ``out/overlays/<stem>.png``. Returns a summary dict.
    """
    cfg = cfg or MaskConfig()
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = find_inputs(list(inputs))
    if not files:
        raise ValueError(f"no DICOM/PNG/JPEG inputs found in {[str(i) for i in inputs]}")
    names = _output_names(files, inputs)
    seg = load_model(cfg, tracking_uri)
    t_model = time.perf_counter()
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(files), desc="segment", unit="img", disable=not progress)
    for start in range(0, len(files), cfg.batch_size):
        batch: list[tuple[str, Path, LoadedImage]] = []
        for f, name in zip(
            files[start : start + cfg.batch_size], names[start : start + cfg.batch_size], strict=True
        ):
            try:
                batch.append((name, f, read_image(f)))
            except ValueError as exc:
                rows.append({"input": str(f), "mask": "", "status": "unreadable", "reason": str(exc)})
                bar.update(1)
        preds = seg.predict_prepared([seg.prepare(img.pixels) for _, _, img in batch])
        for (name, f, img), pred in zip(batch, preds, strict=True):
            target = write_mask(out / f"{name}.png", pred.mask)
            qc = assess_prediction(pred, cfg)
            if cfg.overlays:
                preview = out / "overlays" / f"{name}.png"
                preview.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_preview(img.pixels, pred.mask)).save(preview, compress_level=1)
            rows.append(
                {
                    "input": str(f),
                    "mask": str(target),
                    "rows": img.shape[0],
                    "columns": img.shape[1],
                    "status": "ok" if qc.passed else "qc_failed",
                    "reason": qc.reason,
                    **{k: v for k, v in qc.to_row().items() if k in _QC_COLUMNS},
                }
            )
            bar.update(1)
    bar.close()
    columns = ["input", "mask", "rows", "columns", "status", "reason", *_QC_COLUMNS]
    with (out / "segment.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows({c: r.get(c, "") for c in columns} for r in rows)
    seconds = time.perf_counter() - t0
    n_ok = sum(r["status"] != "unreadable" for r in rows)
    summary = {
        "n_inputs": len(files),
        "n_segmented": n_ok,
        "n_qc_failed": sum(r["status"] == "qc_failed" for r in rows),
        "n_unreadable": sum(r["status"] == "unreadable" for r in rows),
        "out": str(out),
        "table": str(out / "segment.csv"),
        "seconds": round(seconds, 3),
        "model_load_seconds": round(t_model - t0, 3),
        "images_per_s": round(n_ok / max(seconds, 1e-9), 2),
        "model": _model_info(seg, cfg, None),
    }
    return summary


# --------------------------------------------------------------------------------------------------
# Pipeline stage
# --------------------------------------------------------------------------------------------------


def _read_validated(path: Path) -> np.ndarray:
    """A validate-stage image (16-bit PNG or uint16 .npy) as float32 [0, 1]."""
    if path.suffix == ".npy":
        stored = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as im:
            stored = np.asarray(im)
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / 255.0
    return stored.astype(np.float32) / 65535.0


def _box(row: pd.Series) -> Letterbox:
    return Letterbox(
        rows=int(row["rows"]),
        columns=int(row["columns"]),
        size=int(row["image_size"]),
        pad_top=int(row["pad_top"]),
        pad_bottom=int(row["pad_bottom"]),
        pad_left=int(row["pad_left"]),
        pad_right=int(row["pad_right"]),
    )


def _unpadded(image: np.ndarray, box: Letterbox) -> np.ndarray:
    """The part of a letterboxed image that shows the original (padding cropped away)."""
    s = box.scale
    r0, c0 = round(box.pad_top * s), round(box.pad_left * s)
    r1 = max(r0 + 1, round((box.pad_top + box.rows) * s))
    c1 = max(c0 + 1, round((box.pad_left + box.columns) * s))
    return image[r0:r1, c0:c1]


def _provided_mask(row: pd.Series, provided: Path | None) -> tuple[np.ndarray | None, str, str] | None:
    """``(mask or None, origin, error)`` for the first provided mask found, None when there is none.

    In provided masks the 127 'ignore' value counts as lung. An unreadable file gives ``mask=None`` and
    the error message (the image is then quarantined, not silently re-segmented).
    """
    uid = str(row["sop_instance_uid"])
    candidates: list[str] = []
    if provided is not None:
        candidates += [str(provided / f"{uid}.png"), str(provided / f"{Path(str(row['path'])).stem}.png")]
    if isinstance(row.get("mask"), str) and row["mask"]:
        candidates.append(str(row["mask"]))
    for c in candidates:
        try:
            if c.startswith("s3://"):
                import io

                from isnetflow.dicom.source import SourceError, read_bytes

                try:
                    data = read_bytes(c)
                except SourceError as exc:
                    return None, c, f"cannot read provided mask: {exc}"
                ref = read_reference_mask(io.BytesIO(data), name=c)
            elif Path(c).is_file():
                ref = read_reference_mask(c)
            else:
                continue
        except ValueError as exc:
            return None, c, str(exc)
        return ref.lung | ref.ignore, c, ""
    return None


def run(
    cfg: MaskConfig,
    validated_dir: str | Path,
    out_dir: str | Path,
    provided_masks: str | Path | None = None,
    *,
    model_version: str | None = None,
    tracking_uri: str | None = None,
    progress: bool = False,
) -> MasksResult:
    """Produce and QC a lung mask for every valid image of a validate-stage output folder.

    ``model_version`` (e.g. from :func:`isnetflow.stages.segmenter.register_shipped`) is recorded in
    ``masks.json`` for lineage. See the module docstring for the files written.
    """
    t0 = time.perf_counter()
    vdir, out = Path(validated_dir), Path(out_dir)
    if not manifest_path(vdir).is_file():
        raise FileNotFoundError(f"{manifest_path(vdir)}: no validate-stage manifest")
    valid = read_manifest(vdir, valid_only=True)  # typed; quarantined rows never get a mask
    provided = Path(provided_masks) if provided_masks is not None else None
    if provided is not None and not provided.is_dir():
        raise FileNotFoundError(f"{provided}: provided-masks folder not found")
    for sub in ("masks", "quarantine"):
        folder = out / sub
        if folder.is_dir() and any(folder.iterdir()):
            if not (out / "masks.json").is_file():
                raise FileExistsError(f"{folder}: exists, is not empty and is not from a mask-stage run")
            shutil.rmtree(folder)  # our own previous output: start clean, no stale masks
        folder.mkdir(parents=True, exist_ok=True)

    records: list[dict[str, Any]] = []
    failed_tiles: list[GalleryTile] = []
    passed_tiles: list[GalleryTile] = []
    sampled = set(
        np.linspace(0, max(0, len(valid) - 1), min(cfg.gallery_max, len(valid))).astype(int).tolist()
    )
    pending: list[tuple[int, np.ndarray, Letterbox]] = []
    seg: LungSegmenter | None = None

    def finish(i: int, image: np.ndarray, mask: np.ndarray, source: str, origin: str, qc: MaskQC) -> None:
        row = valid.iloc[i]
        uid = str(row["sop_instance_uid"])
        rel = f"masks/{uid}.png" if qc.passed else f"quarantine/{uid}.png"
        write_mask(out / rel, mask)
        records.append(
            {
                "sop_instance_uid": uid,
                "path": row["path"],
                "image": row.get("image"),
                "rows": int(row["rows"]),
                "columns": int(row["columns"]),
                "source": source,
                "origin": origin,
                "status": "ok" if qc.passed else "quarantined",
                "reason": qc.reason,
                "mask": rel if qc.passed else "",
                "quarantined_mask": "" if qc.passed else rel,
                **{k: v for k, v in qc.to_row().items() if k in _QC_COLUMNS},
            }
        )
        wanted = (not qc.passed and len(failed_tiles) < cfg.gallery_max) or (qc.passed and i in sampled)
        if wanted and cfg.gallery_max:
            small = Image.fromarray(mask.astype(np.uint8) * 255).resize(
                (image.shape[1], image.shape[0]), Image.Resampling.NEAREST
            )
            caption = f"{uid[-20:]}\n{source}: {'ok' if qc.passed else qc.failures[0][:28]}"
            tile = GalleryTile(overlay(image, np.asarray(small) > 127), caption, qc.passed)
            (passed_tiles if qc.passed else failed_tiles).append(tile)

    def flush() -> None:
        nonlocal seg
        if not pending:
            return
        seg = seg or load_model(cfg, tracking_uri)
        prepared = [seg.prepare(image) for _, image, _ in pending]
        shapes = [(box.rows, box.columns) for _, _, box in pending]
        for (i, image, _), pred in zip(pending, seg.predict_prepared(prepared, shapes), strict=True):
            qc = assess_prediction(pred, cfg)
            finish(i, image, pred.mask, "predicted", "segmenter", qc)
        pending.clear()

    for i in tqdm(range(len(valid)), desc="masks", unit="img", disable=not progress):
        row = valid.iloc[i]
        box = _box(row)
        try:
            image = _unpadded(_read_validated(vdir / str(row["image"])), box)
        except (OSError, ValueError) as exc:
            problem = f"cannot read normalized image {row['image']}: {exc}"
            empty = np.zeros((box.rows, box.columns), dtype=bool)
            blank = np.zeros((8, 8), dtype=np.float32)
            finish(
                i,
                blank,
                empty,
                "none",
                str(row["image"]),
                MaskQC(0.0, 0, 0.0, 0.0, 0.0, None, failures=[problem]),
            )
            continue
        given = _provided_mask(row, provided) if cfg.use_provided else None
        if given is None:
            pending.append((i, image, box))
            if len(pending) >= cfg.batch_size:
                flush()
            continue
        mask, origin, error = given
        if mask is None:
            empty = np.zeros((box.rows, box.columns), dtype=bool)
            finish(i, image, empty, "provided", origin, MaskQC(0.0, 0, 0.0, 0.0, 0.0, None, failures=[error]))
            continue
        if mask.shape != (box.rows, box.columns):
            shape = f"{mask.shape[0]}x{mask.shape[1]}"
            problem = f"provided mask {origin} is {shape}, image is {box.rows}x{box.columns}"
            empty = np.zeros((box.rows, box.columns), dtype=bool)
            finish(
                i, image, empty, "provided", origin, MaskQC(0.0, 0, 0.0, 0.0, 0.0, None, failures=[problem])
            )
            continue
        qc = assess(mask, cfg) if cfg.qc_provided else MaskQC(float(mask.mean()), 0, 0.0, 0.0, 0.0, None)
        finish(i, image, mask, "provided", origin, qc)
    flush()

    columns = [
        "sop_instance_uid",
        "path",
        "image",
        "rows",
        "columns",
        "source",
        "origin",
        "status",
        "reason",
        "mask",
        "quarantined_mask",
        *_QC_COLUMNS,
    ]
    table = pd.DataFrame(records, columns=columns).sort_values("path", kind="stable").reset_index(drop=True)
    table.to_csv(out / "mask_qc.csv", index=False)
    tiles = (failed_tiles + passed_tiles)[: cfg.gallery_max]
    if tiles:
        write_gallery(
            tiles,
            out / "gallery.png",
            columns=cfg.gallery_columns,
            title=f"lung masks: {len(table) - int((table['status'] == 'ok').sum())} quarantined (red frame) "
            f"of {len(table)}",
        )
    seconds = time.perf_counter() - t0
    reasons = Counter(
        r for rs in table.loc[table["status"] == "quarantined", "reason"] for r in str(rs).split("; ")
    )
    summary: dict[str, Any] = {
        "n_images": len(table),
        "n_ok": int((table["status"] == "ok").sum()),
        "n_quarantined": int((table["status"] == "quarantined").sum()),
        "n_provided": int((table["source"] == "provided").sum()),
        "n_predicted": int((table["source"] == "predicted").sum()),
        "counts": {
            "images": len(table),
            "ok": int((table["status"] == "ok").sum()),
            "quarantined": int((table["status"] == "quarantined").sum()),
            "provided": int((table["source"] == "provided").sum()),
            "predicted": int((table["source"] == "predicted").sum()),
        },
        "quarantine_reasons": dict(reasons.most_common()),
        "model": _model_info(seg, cfg, model_version)
        if seg is not None
        else {"source": "not needed", "registered_version": model_version},
        "files": {"masks": "masks/<SOPInstanceUID>.png", "qc": "mask_qc.csv", "gallery": "gallery.png"},
        "wall_seconds": round(seconds, 3),
    }
    (out / "masks.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "masks: %d ok, %d quarantined (%d provided, %d predicted) in %.1f s",
        summary["n_ok"],
        summary["n_quarantined"],
        summary["n_provided"],
        summary["n_predicted"],
        seconds,
    )
    return MasksResult(out=out, table=table, summary=summary)
