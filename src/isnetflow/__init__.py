"""isnetflow: chest-X-ray classifiers that ignore background shortcuts (ISNet), as a kfp + MLflow pipeline.

The domain package never imports kfp; the kfp wrappers live in ``components/`` and ``pipelines/``,
installed as ``isnetflow_kfp.components`` and ``isnetflow_kfp.pipelines``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("isnetflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
