"""Ingest stage for the pipeline: choose the data source, then validate it.

* No input: generate the synthetic multi-hospital cohort (the demo's embedded default) and take its
  site roles from ``cohort.json`` and its ground-truth lung masks from ``masks/``.
* ``input_uri`` (a folder or ``s3://bucket/prefix``): user DICOM files with ``labels.csv`` beside them
  (or ``labels_uri``); external sites from ``external_sites``; lung masks from a ``masks/`` folder
  beside the labels file when present (missing masks are generated later by the mask stage).

The labels file and a ``masks/`` folder inside the input tree are side files, not input images, so
they are excluded from the DICOM scan (and listed in the summary).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from isnetflow.config import Settings
from isnetflow.dicom.source import is_s3, join, parent
from isnetflow.validation.fingerprint import data_fingerprint

log = logging.getLogger(__name__)

__all__ = ["resolve", "run"]


def _rel(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    p = Path(path)
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def resolve(out: str | Path, entry: str | None) -> Path | None:
    """Absolute path of an ``ingest.json`` entry (relative entries are inside ``out``)."""
    if entry is None:
        return None
    p = Path(entry)
    return p if p.is_absolute() else Path(out) / p


def run(
    settings: Settings,
    out: str | Path,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``out/validated`` (and ``out/cohort`` in demo mode); return a summary with paths and roles."""
    from isnetflow.stages import synth, validate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vcfg = settings.validate
    provided_masks: str | None = None
    cohort_preview: str | None = None
    if not input_uri:
        cohort = out / "cohort"
        info = synth.run(settings.synth, cohort, preview=out / "cohort-preview.png", progress=progress)
        cohort_preview = info.get("preview")
        source, labels = str(cohort / "dicom"), str(cohort / "labels.csv")
        provided_masks = str(cohort / "masks")
        vcfg = vcfg.model_copy(
            update={"internal_sites": info["internal_sites"], "external_sites": info["external_sites"]}
        )
    else:
        source = input_uri
        labels = labels_uri or join(input_uri, "labels.csv")
        if external_sites:
            vcfg = vcfg.model_copy(update={"external_sites": list(external_sites)})
        labels_dir = parent(labels)
        if not is_s3(labels_dir) and (Path(labels_dir) / "masks").is_dir():
            provided_masks = str(Path(labels_dir) / "masks")
        # The labels file and the masks folder beside it are side files, not DICOM inputs.
        side = [Path(labels).name, "masks"] if parent(labels).rstrip("/") == source.rstrip("/") else []
        vcfg = vcfg.model_copy(update={"exclude": [*vcfg.exclude, *side]})
    result = validate.run(vcfg, source, out / "validated", labels=labels, progress=progress)
    summary = {
        # location-independent identity of the data (what scheduled retraining compares)
        "data_fingerprint": data_fingerprint(out / "validated"),
        "source": source,
        "labels": labels,
        # Paths inside ``out`` are relative: pipeline artifacts are mounted at different places per task.
        "validated": "validated",
        "provided_masks": _rel(provided_masks, out),
        "cohort_preview": _rel(cohort_preview, out),
        "internal_sites": list(vcfg.internal_sites),
        "external_sites": list(vcfg.external_sites),
        "validation": result.summary,
        "passed": bool(result.passed),
        "reason": result.failure,
    }
    (out / "ingest.json").write_text(json.dumps(summary, indent=2, default=str))
    log.info("ingest: %s", result.failure or "passed")
    return summary
