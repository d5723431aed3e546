"""Model card (markdown) for a set of lung-segmenter weights, written from its spec and evaluation."""

from __future__ import annotations

import math
from typing import Any

from .spec import SegmenterSpec

__all__ = ["model_card"]


def _fmt(summary: dict[str, Any] | None, key: str = "dice") -> str:
    if not summary:
        return "n/a"
    s = summary.get(key, summary)
    mean, sd = s.get("mean", math.nan), s.get("sd", math.nan)
    if not isinstance(mean, float | int) or not math.isfinite(mean):
        return "n/a"
    med, low, n = s.get("median", math.nan), s.get("min", math.nan), s.get("n", 0)
    return f"{mean:.3f} ± {sd:.3f} (median {med:.3f}, min {low:.3f}, n={n})"


def model_card(
    spec: SegmenterSpec, evaluation: dict[str, Any] | None = None, *, title: str = "Lung segmenter"
) -> str:
    """Markdown describing architecture, preprocessing, training data and command, metrics, limits."""
    t = spec.training
    ev = evaluation or t.get("evaluation", {})
    lines = [
        f"# {title}",
        "",
        "A MONAI 2-D network that outlines both lungs on frontal chest radiographs, used by isnetflow to",
        "build the lung masks that the ISNet heatmap loss needs.",
        "",
        "## Model",
        "",
        f"- Architecture: MONAI `{spec.architecture}` with `{spec.network}`",
        f"- Parameters: {t.get('parameters', 'n/a')}; weights `{spec.weights_file}` ({spec.weights_dtype}), "
        f"sha256 `{spec.weights_sha256}`",
        f"- Input: per-image intensity window at percentiles {list(spec.percentiles)} -> [0, 1], centred "
        f"letterbox to a square (pad = {spec.pad_value}, air), area resize to {spec.image_size} x "
        f"{spec.image_size}; bright = dense (MONOCHROME1 is inverted by the DICOM reader)",
        f"- Output: one logit per pixel; lung = sigmoid > {spec.threshold}; masks are mapped back to the "
        "original resolution, then the two largest components are kept and holes filled",
        f"- Mask convention: {spec.mask_convention}",
        "",
        "## Training",
        "",
    ]
    if t.get("command"):
        lines += ["Command (run from the repository root):", "", "```bash", str(t["command"]), "```", ""]
    for key, label in (
        ("data", "Data"),
        ("split", "Split"),
        ("init_from", "Fine-tuned from"),
        ("synthetic", "Synthetic phantoms"),
        ("augmentation", "Augmentation"),
        ("schedule", "Schedule"),
        ("wall_seconds", "Wall time (s)"),
        ("hardware", "Hardware"),
    ):
        if t.get(key) is not None:
            lines.append(f"- {label}: {t[key]}")
    lines += ["", "## Evaluation", ""]
    if ev.get("held_out"):
        h = ev["held_out"]
        lines += [
            "Held-out real radiographs (patients never seen in training; Dice excludes the 127 'ignore' "
            "pixels; each image's original resolution):",
            "",
            f"- Dice: {_fmt(h.get('clean'))}",
            f"- HD95 (px): {_fmt(h.get('clean'), 'hd95_px')}",
            f"- Dice under strong perturbations (all pooled, proxy for other hospitals): "
            f"{_fmt({'dice': h.get('perturbed_all', {})})}",
            "",
            "| perturbation | Dice mean ± sd | min |",
            "| --- | --- | --- |",
        ]
        for name, res in h.get("perturbed", {}).items():
            d = res["dice"]
            lines.append(f"| {name} | {d['mean']:.3f} ± {d['sd']:.3f} | {d['min']:.3f} |")
        lines.append("")
    if ev.get("synthetic"):
        s = ev["synthetic"]
        lines += [
            f"Synthetic phantoms (isnetflow.synth, default six sites, seed {s.get('seed', 0)}, "
            f"n={s.get('n')}):",
            "",
            "- Dice against the phantom masks (heart cut out, JSRT-like): "
            f"{_fmt(s.get('phantom_convention'))}",
            f"- Dice with the lung-under-the-heart region ignored (the real masks' convention): "
            f"{_fmt(s.get('real_convention'))}",
            "",
        ]
    lines += [
        "## Intended use and limits",
        "",
        "- Frontal (PA/AP) adult and adolescent chest radiographs; lateral views, CT scouts and other body",
        "  parts are out of scope and are expected to fail QC (area, components, balance, confidence).",
        "- Trained on the real images named under Training plus synthetic phantoms: the perturbation",
        "  results above are a proxy, not a measurement, of performance at hospitals unlike those.",
        "  Use the mask stage's QC table and gallery to catch failures; failing masks are quarantined.",
        "- Severe consolidation or effusion may shrink a lung below the QC balance threshold.",
        "",
        "## Data licenses and attribution",
        "",
        "Real images: COVID-19 Image Data Collection (Cohen et al., arXiv:2006.11988): the images",
        "contributed by Hannover Medical School (CC BY 3.0) and, for fine-tuned weights, the collection's",
        "other frontal radiographs (each under the licence of its `metadata.csv` row: CC BY, CC BY-NC-SA,",
        "CC BY-NC-ND, ...). Lung annotations: V7 Labs, CC BY 4.0. The images are not distributed with",
        "isnetflow; only the trained weights are.",
        "",
    ]
    return "\n".join(lines)
