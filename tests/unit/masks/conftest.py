"""Fixtures for the lung-mask tests: the shipped segmenter and small synthetic two-lung masks."""

from __future__ import annotations

import numpy as np
import pytest

from isnetflow.masks import LungSegmenter


@pytest.fixture(scope="session")
def shipped() -> LungSegmenter:
    """The weights shipped in the package (a test failure if they are missing or corrupt)."""
    return LungSegmenter.load()


def two_lungs(rows: int = 200, cols: int = 240) -> np.ndarray:
    """A plausible boolean lung mask: two vertical ellipses left and right of the midline."""
    y, x = np.mgrid[0:rows, 0:cols]
    left = ((x - cols * 0.3) / (cols * 0.14)) ** 2 + ((y - rows * 0.5) / (rows * 0.32)) ** 2 < 1
    right = ((x - cols * 0.7) / (cols * 0.13)) ** 2 + ((y - rows * 0.5) / (rows * 0.3)) ** 2 < 1
    return left | right


@pytest.fixture
def lungs() -> np.ndarray:
    return two_lungs()
