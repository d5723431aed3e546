"""Network factory and weight files for the lung segmenter.

Weights are stored as a float16 ``state_dict`` (``lung_segmenter.pt``) next to a JSON
:class:`~isnetflow.masks.spec.SegmenterSpec` (``lung_segmenter.json``). The shipped pair lives in
``isnetflow/masks/weights/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import AttentionUnet, BasicUNet, SegResNet, UNet
from torch import nn

from .spec import Architecture, SegmenterSpec, sha256_file

__all__ = [
    "SHIPPED_DIR",
    "SHIPPED_SPEC",
    "build_network",
    "default_network_kwargs",
    "load_network",
    "resolve_spec_path",
    "save_network",
]

#: Folder of the weights shipped inside the package.
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
#: The shipped spec JSON (the weights file name is inside it).
SHIPPED_SPEC = SHIPPED_DIR / "lung_segmenter.json"


def default_network_kwargs(
    architecture: Architecture, channels: tuple[int, ...] = (16, 32, 64, 128, 256), num_res_units: int = 2
) -> dict[str, Any]:
    """Constructor arguments for a 2-D, 1-channel-in, 1-logit-out network of the given family.

    ``channels`` are the encoder widths (UNet / AttentionUnet); SegResNet uses ``channels[0]`` as
    ``init_filters`` and BasicUNet takes the first five plus a final width equal to ``channels[0]``.
    """
    c = list(channels)
    if architecture == "unet":
        return {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "channels": c,
            "strides": [2] * (len(c) - 1),
            "num_res_units": num_res_units,
            "norm": "batch",
        }
    if architecture == "attentionunet":
        return {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "channels": c,
            "strides": [2] * (len(c) - 1),
        }
    if architecture == "segresnet":
        return {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 1,
            "init_filters": c[0],
            "blocks_down": [1, 2, 2, 4],
            "blocks_up": [1, 1, 1],
        }
    if architecture == "basicunet":
        if len(c) < 5:
            raise ValueError(f"basicunet needs 5 channel widths, got {c}")
        return {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "features": [*c[:5], c[0]]}
    raise ValueError(f"unknown architecture {architecture!r}")


def build_network(spec: SegmenterSpec) -> nn.Module:
    """Instantiate the MONAI network described by ``spec`` (random weights)."""
    classes: dict[str, type[nn.Module]] = {
        "unet": UNet,
        "segresnet": SegResNet,
        "basicunet": BasicUNet,
        "attentionunet": AttentionUnet,
    }
    kwargs = spec.network or default_network_kwargs(spec.architecture)
    try:
        return classes[spec.architecture](**kwargs)
    except TypeError as exc:
        raise ValueError(f"cannot build {spec.architecture} with {kwargs}: {exc}") from exc


def save_network(
    model: nn.Module, spec: SegmenterSpec, folder: str | Path, stem: str = "lung_segmenter"
) -> Path:
    """Write ``<stem>.pt`` (state_dict in ``spec.weights_dtype``) and ``<stem>.json``; returns the JSON.

    The returned spec file records the weights' sha256, so the pair can be verified and registered
    idempotently.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if spec.weights_dtype == "float16" else torch.float32
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    weights = out / f"{stem}.pt"
    torch.save(state, weights)
    final = spec.model_copy(update={"weights_file": weights.name, "weights_sha256": sha256_file(weights)})
    return final.save(out / f"{stem}.json")


def resolve_spec_path(path: str | Path | None) -> Path:
    """The spec JSON for ``path``: the shipped one for None, a JSON as is, a ``.pt``'s sibling JSON, or
    the single ``*.json`` spec inside a folder."""
    if path is None:
        return SHIPPED_SPEC
    p = Path(path)
    if p.is_dir():
        candidates = sorted(p.rglob("lung_segmenter.json")) or sorted(p.rglob("*.json"))
        for c in candidates:
            try:
                SegmenterSpec.load(c)
            except ValueError:
                continue
            return c
        raise FileNotFoundError(f"{p}: no lung-segmenter spec JSON found in this folder")
    if p.suffix == ".pt":
        p = p.with_suffix(".json")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: lung-segmenter spec not found")
    return p


def load_network(path: str | Path | None = None, *, verify: bool = True) -> tuple[nn.Module, SegmenterSpec]:
    """Load weights + spec (the shipped ones when ``path`` is None) as a float32 model in eval mode.

    ``verify`` checks the weights' sha256 against the spec and raises ``ValueError`` on a mismatch.
    """
    spec_path = resolve_spec_path(path)
    spec = SegmenterSpec.load(spec_path)
    weights = spec_path.parent / spec.weights_file
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: weights file named in {spec_path} is missing")
    if verify and spec.weights_sha256 and sha256_file(weights) != spec.weights_sha256:
        raise ValueError(f"{weights}: sha256 does not match {spec_path} (corrupt or replaced weights)")
    model = build_network(spec)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except (RuntimeError, OSError, ValueError) as exc:
        raise ValueError(f"{weights}: cannot load into {spec.architecture}: {exc}") from exc
    return model.float().eval(), spec
