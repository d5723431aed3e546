"""Post-processing keeps two components and fills holes; QC rejects degenerate masks."""

from __future__ import annotations

import numpy as np
import pytest

from isnetflow.config import MaskConfig
from isnetflow.masks import assess, postprocess
from isnetflow.masks.inference import confidence_margin
from isnetflow.masks.metrics import dice, hausdorff95
from isnetflow.masks.postprocess import component_areas


def test_postprocess_keeps_two_largest_and_fills_holes(lungs: np.ndarray) -> None:
    m = lungs.copy()
    m[95:105, 65:75] = False  # a hole inside the left lung
    m[5:8, 5:8] = True  # a speck
    m[185:195, 110:130] = True  # a third, smaller blob
    out = postprocess(m)
    _, areas = component_areas(out)
    assert areas.size == 2
    assert out[100, 70]  # hole filled
    assert not out[6, 6] and not out[190, 120]  # speck and blob removed
    assert np.array_equal(out, lungs)


def test_postprocess_empty_stays_empty() -> None:
    assert not postprocess(np.zeros((10, 10), dtype=bool)).any()


def test_good_mask_passes(lungs: np.ndarray) -> None:
    qc = assess(lungs, fragment_fraction=0.01, confidence=0.95)
    assert qc.passed, qc.reason
    assert 0.3 < qc.left_fraction < 0.7 and qc.n_components == 2
    off_centre = np.zeros((200, 480), dtype=bool)  # wide field: both lungs left of the image midline
    off_centre[:, :240] = lungs
    assert assess(off_centre, confidence=0.95).passed


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("empty", "lung area"),
        ("one_lung", "component"),
        ("huge", "lung area"),
        ("fragmented", "fragmented"),
        ("stacked", "stacked"),
        ("unbalanced", "balance"),
        ("unsure", "confidence"),
    ],
)
def test_degenerate_masks_fail(lungs: np.ndarray, case: str, expected: str) -> None:
    m = lungs.copy()
    kwargs: dict[str, float] = {"fragment_fraction": 0.0, "confidence": 0.95}
    cols = m.shape[1]
    if case == "empty":
        m[:] = False
    elif case == "one_lung":
        m[:, cols // 2 :] = False
    elif case == "huge":
        m[:] = True
        m[:, cols // 2 - 2 : cols // 2 + 2] = False
    elif case == "fragmented":
        kwargs["fragment_fraction"] = 0.3
    elif case == "stacked":  # one lung cut in two (upper / lower), the other missing
        m[:] = False
        m[20:90, 20:100] = True
        m[110:180, 25:100] = True
    elif case == "unbalanced":
        m[:, cols // 2 :] = False
        m[90:100, 160:170] = True
    elif case == "unsure":
        kwargs["confidence"] = 0.75
    qc = assess(m, MaskConfig(), **kwargs)
    assert not qc.passed
    assert expected in qc.reason, qc.reason


def test_dice_ignores_127_pixels(lungs: np.ndarray) -> None:
    ignore = np.zeros_like(lungs)
    ignore[50:80, 40:90] = True
    pred = lungs.copy()
    pred[ignore] = ~pred[ignore]  # wrong everywhere in the ignore region
    assert dice(pred, lungs, ignore) == pytest.approx(1.0)
    assert dice(pred, lungs) < 0.99
    assert hausdorff95(lungs, lungs) == pytest.approx(0.0)
    assert hausdorff95(np.roll(lungs, 3, axis=1), lungs) == pytest.approx(3.0, abs=0.5)


def test_confidence_margin() -> None:
    sure = np.zeros((40, 40), dtype=np.float32)
    sure[10:30, 10:30] = 1.0
    assert confidence_margin(sure) == pytest.approx(1.0)
    assert confidence_margin(np.full((40, 40), 0.55, dtype=np.float32)) < 0.2
    assert confidence_margin(np.zeros((40, 40), dtype=np.float32)) == 0.0


def test_mirror_agreement_and_its_qc_check(lungs: np.ndarray) -> None:
    from isnetflow.masks.inference import mirror_agreement

    prob = lungs.astype(np.float32)
    assert mirror_agreement(prob, prob[:, ::-1]) == pytest.approx(1.0)  # the same lungs found on the mirror
    spill = prob.copy()
    spill[:, :30] = 1.0  # an "arm" found only on the original: the mirror's mask does not hold it
    agreement = mirror_agreement(spill, prob[:, ::-1])
    assert 0.5 < agreement < 0.85
    empty = np.zeros_like(prob)
    assert mirror_agreement(empty, empty) == 1.0 and mirror_agreement(prob, empty) == 0.0
    strict = MaskConfig(min_mirror_agreement=0.9)
    qc = assess(lungs, strict, confidence=0.95, mirror_agreement=agreement)
    assert not qc.passed and qc.reason.startswith(
        f"unstable: the mirrored image's mask agrees at Dice {agreement:.2f}"
    )
    assert qc.to_row()["mirror_agreement"] == pytest.approx(agreement)
    assert assess(lungs, strict, confidence=0.95, mirror_agreement=0.95).passed
    assert assess(
        lungs, MaskConfig(), confidence=0.95, mirror_agreement=0.1
    ).passed  # check off: measured only
    assert assess(lungs, strict, confidence=0.95).passed  # not measured: nothing to judge
