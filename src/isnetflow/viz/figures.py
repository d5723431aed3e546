"""Writing matplotlib figures: one way for every PNG the project produces."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["save_figure"]


def save_figure(fig: plt.Figure, png: str | Path, *, dpi: int = 100) -> Path:
    """Lay ``fig`` out, write it to ``png`` (creating the folder) and close it; returns the path."""
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
