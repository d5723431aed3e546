"""Pictures for people: HTML wrappers for the KFP UI (Markdown/HTML artifacts) and reports."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

__all__ = ["figure_html", "images_html"]


def images_html(title: str, images: Sequence[tuple[str, str | Path]], *, note: str = "") -> str:
    """A self-contained HTML page embedding PNG files (base64), for kfp HTML artifacts and reports."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1em}figure{margin:0 0 1.5em}"
        "img{max-width:100%;border:1px solid #ccc}</style></head><body>",
        f"<h2>{html.escape(title)}</h2>",
    ]
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    parts += [figure_html(caption, png) for caption, png in images]
    parts.append("</body></html>")
    return "\n".join(parts)


def figure_html(caption: str, png: str | Path) -> str:
    """One captioned figure with the PNG embedded (base64): the page works without its files."""
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )
