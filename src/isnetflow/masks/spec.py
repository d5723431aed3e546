"""The segmenter's self-description, stored as JSON next to its weights.

A :class:`SegmenterSpec` is everything needed to rebuild the network and to reproduce the exact input
pipeline at inference time (input size, intensity normalization, letterbox padding, threshold). It also
carries provenance: the sha256 of the weights file and a free-form ``training`` record (command, data,
metrics) that the model card is written from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Architecture", "SegmenterSpec", "sha256_file"]

Architecture = Literal["unet", "segresnet", "basicunet", "attentionunet"]


class SegmenterSpec(BaseModel):
    """Architecture, preprocessing and provenance of one set of lung-segmenter weights."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = Field(1, description="bumped when the JSON layout changes incompatibly")
    architecture: Architecture = Field(description="MONAI network class (see isnetflow.masks.network)")
    network: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the MONAI network constructor"
    )
    image_size: int = Field(256, ge=32, description="side of the square (letterboxed) network input")
    percentiles: tuple[float, float] = Field(
        (0.5, 99.5), description="per-image intensity percentiles mapped to 0 and 1 before letterboxing"
    )
    pad_value: float = Field(0.0, description="letterbox padding value in normalized units (0 = air)")
    threshold: float = Field(0.5, gt=0, lt=1, description="probability above which a pixel is lung")
    weights_file: str = Field("lung_segmenter.pt", description="state_dict file name, next to the JSON")
    weights_dtype: Literal["float16", "float32"] = "float16"
    weights_sha256: str | None = Field(None, description="sha256 of the weights file (set on save)")
    mask_convention: str = Field(
        "v7labs: lung fields including the lung behind the heart and below the diaphragm dome where "
        "visible; 255 lung, 0 background",
        description="what 'lung' means for these weights",
    )
    training: dict[str, Any] = Field(
        default_factory=dict, description="provenance: command, data, split, metrics, wall time"
    )

    def save(self, path: str | Path) -> Path:
        """Write the spec as indented JSON."""
        p = Path(path)
        p.write_text(self.model_dump_json(indent=2) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> SegmenterSpec:
        """Read a spec JSON, naming the file in any error."""
        p = Path(path)
        try:
            return cls.model_validate(json.loads(p.read_text()))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{p}: not a valid lung-segmenter spec: {exc}") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
