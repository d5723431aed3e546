"""The shipped weights on synthetic phantoms (no shared data needed)."""

from __future__ import annotations

import numpy as np

from isnetflow.masks import LungSegmenter
from isnetflow.masks.evaluate import evaluate, synthetic_items


def test_shipped_weights_on_phantoms(shipped: LungSegmenter) -> None:
    raw, heart_ignored = synthetic_items(12, seed=5, size=128)
    fair = evaluate(shipped, heart_ignored, [], progress=False)["clean"]["dice"]
    strict = evaluate(shipped, raw, [], progress=False)["clean"]["dice"]
    # At 256 px (60 phantoms, seed 0): 0.985 with the heart region ignored, 0.928 against phantom masks.
    assert fair["mean"] >= 0.95 and fair["min"] >= 0.9, fair
    assert strict["mean"] >= 0.85, strict
    assert np.isfinite(strict["sd"])
