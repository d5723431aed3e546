"""Synthetic cohort stage: write the cohort and its preview picture."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from isnetflow.config import SynthConfig

log = logging.getLogger(__name__)

__all__ = ["run"]


def run(
    cfg: SynthConfig, out: str | Path, *, preview: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Generate the cohort under ``out`` (see :mod:`isnetflow.synth.cohort` for the layout).

    Returns the cohort summary (also written to ``out/cohort.json``) with ``wall_seconds`` and, when
    ``preview`` is given, ``preview`` (the PNG path) added.
    """
    from isnetflow.synth import generate_cohort, write_preview

    t0 = time.perf_counter()
    summary = generate_cohort(cfg, out, progress=progress)
    summary["wall_seconds"] = round(time.perf_counter() - t0, 3)
    log.info(
        "synth: %d images, %d sites -> %s in %.1f s",
        summary["n"],
        len(summary["sites"]),
        out,
        summary["wall_seconds"],
    )
    if preview is not None:
        summary["preview"] = str(write_preview(out, preview))
    return summary
