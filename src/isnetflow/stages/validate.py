"""Validate stage (``isnetflow validate``): every file of an input tree -> valid | quarantined | ignored.

The work is :func:`isnetflow.validation.dataset.validate_tree` (which the ingest stage runs too); the
per-file checks are :func:`isnetflow.validation.files.process_file`. See
:mod:`isnetflow.validation.dataset` for the files written under ``out`` and what makes a run pass.
"""

from __future__ import annotations

from isnetflow.validation.dataset import MANIFEST_COLUMNS, ValidateError, ValidateResult, validate_tree

__all__ = ["MANIFEST_COLUMNS", "ValidateError", "ValidateResult", "run"]

#: ``run(cfg, input, out, *, labels=None, provided_masks=None, progress=False) -> ValidateResult``:
#: validate every file under ``input`` (a folder or ``s3://bucket/prefix``) into ``out``; raises
#: :class:`ValidateError` (one line) only when the input itself is unusable.
run = validate_tree
