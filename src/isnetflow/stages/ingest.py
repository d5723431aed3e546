"""Ingest stage for the pipeline: choose the data source, then validate it.

* No input: generate the synthetic multi-hospital cohort (the demo's embedded default) and take its
  site roles from ``cohort.json`` and its ground-truth lung masks from ``masks/``.
* ``input_uri`` (a folder or ``s3://bucket/prefix``): user DICOM files with ``labels.csv`` beside them
  (or ``labels_uri``); external sites from ``external_sites``; lung masks from a ``masks/`` folder
  beside the labels file when present (missing masks are generated later by the mask stage).

``external_sites`` also picks the held-out hospitals of the synthetic cohort (the other generated sites
are then internal). The run does not pass (and the pipeline stops before training) when validation
fails, when an external site is not in the data, or when fewer valid images than
``validate.min_internal_images`` / ``min_external_images`` are left on either side.

The labels file and the ``masks/`` folder beside it are side files, not input images: when they lie
inside the input tree, the validate stage lists them in the manifest as ``ignored`` (``labels_file``,
``provided_mask``). Only that folder is a side folder: a folder named ``masks`` elsewhere in the tree is
scanned like any other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from isnetflow.artifacts.validation import IngestSummary, ValidationSummary
from isnetflow.config import Settings, ValidateConfig
from isnetflow.dicom.source import is_s3, join, parent
from isnetflow.validation.dataset import validate_tree
from isnetflow.validation.fingerprint import data_fingerprint
from isnetflow.validation.sites import count_roles, resolve_sites, role_shortfall, unknown_sites

log = logging.getLogger(__name__)

__all__ = ["run"]


def _rel(path: str | None, root: Path) -> str | None:
    if path is None:
        return None
    p = Path(path)
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def run(
    settings: Settings,
    out: str | Path,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``out/validated`` (and ``out/cohort`` in demo mode) and ``out/ingest.json``
    (:class:`~isnetflow.artifacts.validation.IngestSummary`); return that summary as a mapping."""
    from isnetflow.synth import generate_cohort, write_preview

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vcfg = settings.validate
    provided_masks: str | None = None  # a local folder the mask stage reads
    side_masks: str | None = None  # the masks folder beside the labels file (what validate ignores)
    cohort_preview: str | None = None
    if not input_uri:
        cohort = out / "cohort"
        info = generate_cohort(settings.synth, cohort, progress=progress)
        cohort_preview = str(write_preview(cohort, out / "cohort-preview.png"))
        source, labels = str(cohort / "dicom"), str(cohort / "labels.csv")
        provided_masks = side_masks = str(cohort / "masks")
        internal, external = info["internal_sites"], info["external_sites"]
        if external_sites:  # held out as chosen; every other generated site is internal
            names = [*internal, *external]
            external = resolve_sites(external_sites, names)
            internal = [n for n in names if n not in external]
        vcfg = vcfg.model_copy(update={"internal_sites": internal, "external_sites": external})
    else:
        source = input_uri
        labels = labels_uri or join(input_uri, "labels.csv")
        if external_sites:  # exact names (the CLI splits comma-separated lists against the known sites)
            external = list(dict.fromkeys(external_sites))
            vcfg = vcfg.model_copy(
                update={
                    "external_sites": external,
                    "internal_sites": [n for n in vcfg.internal_sites if n not in external],
                }
            )
        labels_dir = parent(labels)
        side_masks = join(labels_dir, "masks")
        if not is_s3(labels_dir) and Path(side_masks).is_dir():
            provided_masks = side_masks
    result = validate_tree(
        vcfg, source, out / "validated", labels=labels, provided_masks=side_masks, progress=progress
    )
    failure = result.failure or _site_choice_failure(result.manifest, vcfg)
    internal_sites = _internal_sites(result.manifest, vcfg)
    summary = IngestSummary(
        data_fingerprint=data_fingerprint(out / "validated"),
        source=source,
        labels=labels,
        # Paths inside ``out`` are relative: pipeline artifacts are mounted at different places per task.
        validated="validated",
        provided_masks=_rel(provided_masks, out),
        cohort_preview=_rel(cohort_preview, out),
        internal_sites=internal_sites,
        external_sites=list(vcfg.external_sites),
        validation=ValidationSummary.of(result.summary),
        passed=failure is None,
        reason=failure,
    )
    summary.write_to(out)
    log.info("ingest: %s", failure or "passed")
    return summary.model_dump(exclude_unset=True)


def _internal_sites(manifest: pd.DataFrame, vcfg: ValidateConfig) -> list[str]:
    """The internal sites: the configured ones, then every other site of the valid images that is not
    external (training takes an image without a role as internal), e.g. all but ``--external-sites``."""
    valid = manifest[(manifest["status"] == "valid") & (manifest["role"] != "external")]
    seen = sorted({str(s) for s in valid["site"].dropna()})
    return [s for s in dict.fromkeys([*vcfg.internal_sites, *seen]) if s not in vcfg.external_sites]


def _site_choice_failure(manifest: pd.DataFrame, vcfg: ValidateConfig) -> str | None:
    """Why the data cannot make a run although validation passed: an external site that is not in the
    data, or too few valid internal / external images (the pipeline then stops before training)."""
    seen = {str(s) for s in manifest["site"].dropna()}
    missing = [s for s in vcfg.external_sites if s not in seen]
    if missing:
        return unknown_sites(missing, seen, option="external sites")
    valid = manifest[manifest["status"] == "valid"]
    n_internal, n_external = count_roles(list(valid["site"]), list(valid["role"]), vcfg.external_sites)
    return role_shortfall(
        n_internal, n_external, vcfg.min_internal_images, vcfg.min_external_images, what="valid images"
    )
