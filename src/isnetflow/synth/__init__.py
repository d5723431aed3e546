"""Synthetic multi-hospital chest-radiograph cohort with a planted background shortcut.

Public entry points: :func:`generate_cohort` (writes DICOM + labels + masks + truth + cohort.json),
:func:`plan_cohort` / :func:`render_item` (in-memory use, tests, benchmarks) and :func:`write_preview`.
"""

from .cohort import PlannedImage, generate_cohort, phi_coefficient, plan_cohort, render_item, site_code
from .preview import display_array, write_preview, write_shortcut_gallery

__all__ = [
    "PlannedImage",
    "display_array",
    "generate_cohort",
    "phi_coefficient",
    "plan_cohort",
    "render_item",
    "site_code",
    "write_preview",
    "write_shortcut_gallery",
]
