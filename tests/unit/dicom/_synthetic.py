"""One valid synthetic DICOM per photometric kind, for tests that mutate or re-encode them."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from isnetflow.config import SynthConfig
from isnetflow.synth import plan_cohort, render_item
from isnetflow.synth.dicom_writer import write_dicom


def mono_pair(folder: Path, *, size: int, seed: int) -> dict[str, Dataset]:
    """'mono1' (CR, 10-bit, MONOCHROME1) and 'mono2' (DX, 12-bit, MONOCHROME2), written to ``folder``."""
    cfg = SynthConfig(n=6, size=size, seed=seed)
    plan = plan_cohort(cfg)
    out: dict[str, Dataset] = {}
    for key, index in (("mono1", 0), ("mono2", 1)):
        rendered = render_item(plan[index], cfg)
        path = folder / f"{key}.dcm"
        write_dicom(path, rendered.pixels, rendered.meta)
        out[key] = pydicom.dcmread(path)
    assert out["mono1"].PhotometricInterpretation == "MONOCHROME1"
    assert out["mono2"].PhotometricInterpretation == "MONOCHROME2"
    return out
