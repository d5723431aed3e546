"""Patient-level bootstrap confidence intervals.

Images of one patient (follow-ups, several views) are correlated, so resampling images would make
the interval too narrow. Each bootstrap replicate here draws *patients* with replacement and takes all
of a drawn patient's images, as many times as the patient was drawn. Replicates in which the statistic
is undefined (e.g. AUC on a replicate with a single class) are dropped and counted; the interval is
the percentile interval of the remaining replicates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BootstrapCI", "bootstrap_ci", "patient_bootstrap_indices"]


def patient_bootstrap_indices(
    patient_ids: Sequence[str], n_boot: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield ``n_boot`` arrays of image indices, each a resample of patients with replacement.

    Every array contains each drawn patient's image indices ``k`` times when the patient was drawn
    ``k`` times, so a patient's images always stay together.
    """
    pids = np.asarray(list(patient_ids), dtype=object)
    uniq, inverse = np.unique(pids.astype(str), return_inverse=True)
    groups = [np.flatnonzero(inverse == g) for g in range(uniq.size)]
    n_pat = len(groups)
    if n_pat == 0:
        return
    sizes = np.array([g.size for g in groups])
    flat = np.concatenate(groups)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for _ in range(n_boot):
        drawn = rng.integers(0, n_pat, size=n_pat)
        # the drawn patients' runs of ``flat``, in drawn order: each position's offset within its run plus
        # the run's start (one vectorized gather instead of one slice per drawn patient)
        lengths = sizes[drawn]
        ends = np.cumsum(lengths)
        within = np.arange(ends[-1]) - np.repeat(ends - lengths, lengths)
        yield flat[np.repeat(offsets[drawn], lengths) + within]


@dataclass(frozen=True)
class BootstrapCI:
    """Point estimate on all data plus the percentile interval over valid replicates."""

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_valid: int


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    patient_ids: Sequence[str],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    min_valid_fraction: float = 0.5,
) -> BootstrapCI:
    """Percentile CI of ``statistic(indices)`` under patient-level resampling.

    ``statistic`` receives an index array into the per-image data and returns a float (NaN when
    undefined on that replicate). When fewer than ``min_valid_fraction`` of the replicates are
    valid, the interval is reported as NaN (too unstable to quote).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    all_idx = np.arange(len(patient_ids))
    estimate = float(statistic(all_idx)) if len(all_idx) else math.nan
    rng = np.random.default_rng(seed)
    values = []
    for idx in patient_bootstrap_indices(patient_ids, n_boot, rng):
        v = float(statistic(idx))
        if math.isfinite(v):
            values.append(v)
    n_valid = len(values)
    if n_boot == 0 or n_valid < max(1, math.ceil(min_valid_fraction * n_boot)):
        return BootstrapCI(estimate, math.nan, math.nan, level, n_boot, n_valid)
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(values), [alpha, 1 - alpha])
    return BootstrapCI(estimate, float(low), float(high), level, n_boot, n_valid)
