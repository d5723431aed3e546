"""Validate stage (``isnetflow validate``): every file of an input tree -> valid | quarantined | ignored.

The work is :func:`isnetflow.validation.dataset.validate_tree` (which the ingest stage runs too); the
per-file checks are :func:`isnetflow.validation.files.process_file`. See
:mod:`isnetflow.validation.dataset` for the files written under ``out`` and what makes a run pass.
"""

from __future__ import annotations

import os

from isnetflow.config import ValidateConfig
from isnetflow.validation.dataset import MANIFEST_COLUMNS, ValidateError, ValidateResult, validate_tree

__all__ = ["MANIFEST_COLUMNS", "ValidateError", "ValidateResult", "run"]


def run(
    cfg: ValidateConfig,
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    provided_masks: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> ValidateResult:
    """Validate every file under ``input`` (a folder or ``s3://bucket/prefix``) into ``out``; raises
    :class:`ValidateError` (one line) only when the input itself is unusable."""
    return validate_tree(cfg, input, out, labels=labels, provided_masks=provided_masks, progress=progress)
