"""The one place that names the container image every component runs in."""

from __future__ import annotations

import os

from isnetflow import __version__

#: Image built from the repository's Dockerfile; override with ISNETFLOW_IMAGE at compile time.
IMAGE: str = os.environ.get("ISNETFLOW_IMAGE", f"ghcr.io/isnetflow/isnetflow:{__version__}")
