"""The champion in use: model inputs from files, and explanations on demand (``isnetflow explain``).

Inputs
------
:func:`prepare_file` turns one file into the model's input, an ``S x S`` float32 image (``S``: the
training image size):

* **DICOM** (any other suffix than the image ones below): the validate stage's own per-file step
  (:func:`isnetflow.validation.files.process_file`: read, the per-file checks, modality LUT, percentile
  window, MONOCHROME1 inversion, letterbox, uint16 storage) with the validate settings *stored with the
  model* (``ModelFacts.normalization``), then the training loader's own read and resize
  (:func:`isnetflow.training.data.load_array`, :func:`~isnetflow.training.data.resize_pair`). The same
  file therefore always gives the same input, equal to the one training saw. Only the checks that
  concern the image itself apply (the ``explain`` profile of
  :data:`~isnetflow.dicom.issues.CHECK_PROFILES`: readable DICOM, decodable, grayscale, accepted
  modality, frontal where the header says so, usable pixels); the data-set checks (identifiers, site,
  PHI) do not. A file that fails an image check raises :class:`InputError` with the manifest's one-line
  reason and reason code, as the validation would quarantine it; a file that is not DICOM is refused.
* **PNG / JPEG** (``.png``, ``.jpg``, ``.jpeg``): the same per-file step, as a picture input listed in
  ``labels.csv`` (:func:`isnetflow.dicom.picture.analyze_picture`: decode, gray or ``colour_image``,
  the percentile window, letterbox), so a public dataset's PNG gives the input training gave it. A model
  that stores no normalization settings uses the validate defaults at its image size, and says so in
  the input's warnings.

Explanations
------------
:func:`explain_files` runs the pyfunc model's own ``predict(..., params={"explain": True})`` code
(:class:`~isnetflow.serving.model.CXRClassifier`; the one LRP choice is
:data:`~isnetflow.serving.model.EXPLAIN_METHOD`) and writes per image:

* ``<name>.overlay.png``: the model input, and the same image with the signed relevance (red: evidence
  for the explained class, blue: against; scaled to the 99th percentile of ``|R|``);
* ``<name>.json``: the scores per class, the predicted class, the heatmap's method and summary, the input
  kind and the normalization used;
* ``<name>.heatmap.npy``: the ``S x S`` float32 relevance map;

plus ``explanations.json`` listing every input (explained, or refused with its reason).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isnetflow.config import ValidateConfig
from isnetflow.serving.model import (
    EXPLAIN_METHOD,
    EXPLAIN_PARAM,
    EXPLAINED_CLASS,
    HEATMAP,
    CXRClassifier,
    LoadedClassifier,
    ModelFacts,
)

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "ExplainError",
    "InputError",
    "ModelInput",
    "explain_files",
    "list_inputs",
    "normalization_config",
    "prepare_file",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
SUMMARY_FILE = "explanations.json"


class ExplainError(ValueError):
    """The model or the input paths cannot be used (one line naming the URI/file and the problem)."""


class InputError(ValueError):
    """One input file is refused: ``"<file>: <reason>"``; ``code`` is the validate stage's reason code."""

    def __init__(self, source: str, reason: str, code: str) -> None:
        """``source``: the file; ``reason``: the one-line problem; ``code``: its reason code."""
        self.source, self.reason, self.code = source, reason, code
        super().__init__(f"{source}: {reason}")


@dataclass
class ModelInput:
    """One file as the model sees it."""

    source: str
    kind: str  # "dicom" | "image"
    image: np.ndarray  # (S, S) float32 in [0, 1]
    warnings: list[str] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)


def normalization_config(facts: ModelFacts) -> ValidateConfig:
    """The validate settings stored with the model; :class:`ExplainError` when it has none."""
    if not facts.normalization:
        raise ExplainError(
            f"{facts.source_uri or 'the model'}: records no normalization settings (a model trained before "
            "isnetflow logged its manifest with mlflow.log_input); retrain it to explain DICOM files"
        )
    try:
        return ValidateConfig.model_validate(facts.normalization)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise ExplainError(f"{facts.source_uri}: stored normalization settings are invalid: {first}") from exc


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    """The training loader's resize (bilinear, antialiased, clamped to [0, 1])."""
    from isnetflow.training.data import resize_pair

    tensor, _ = resize_pair(image, np.zeros(image.shape, dtype=np.float32), size)
    return np.ascontiguousarray(tensor.numpy()[0], dtype=np.float32)


def _prepare_file(
    path: Path,
    facts: ModelFacts,
    cfg: ValidateConfig,
    patient_id: str | None,
    site: str | None,
    *,
    picture: bool,
) -> ModelInput:
    """The validate stage's per-file step (``explain`` checks) then the training loader's read and resize."""
    from isnetflow.training.data import load_array
    from isnetflow.validation.files import FileTask, process_file

    name = str(path)
    with tempfile.TemporaryDirectory(prefix="isnetflow-explain-") as tmp:
        task = FileTask(
            index=0,
            uri=str(path.resolve()),
            relpath=path.name,
            patient_id=patient_id,
            site=site,
            claims_dicom=not picture,
            listed=picture,
        )
        row = process_file(task, cfg, tmp, checks="explain")
        if row["status"] != "valid":
            raise InputError(name, str(row["reason"]), str(row["reason_code"]))
        stored = load_array(row["_tmp_image"])
    header = {
        k: (v.item() if isinstance(v, np.generic) else v)
        for k in ("modality", "photometric_interpretation", "rows", "columns", "sop_instance_uid", "site")
        if (v := row.get(k)) is not None
    }
    header["window"] = [row.get("window_low"), row.get("window_high")]
    warnings = [w for w in str(row.get("warnings") or "").split(" | ") if w]  # the manifest's separator
    kind = "image" if picture else "dicom"
    return ModelInput(name, kind, _resized(stored, facts.image_size), warnings, header)


def prepare_file(
    path: str | Path,
    facts: ModelFacts,
    *,
    patient_id: str | None = None,
    site: str | None = None,
) -> ModelInput:
    """One file -> the model's input (see the module docstring). ``patient_id``/``site`` are what
    ``labels.csv`` would give the validate stage (they override PatientID / InstitutionName in the
    header facts returned; neither is required)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(str(p), "file not found", "missing_file")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        return _prepare_file(p, facts, normalization_config(facts), patient_id, site, picture=False)
    if facts.normalization:
        return _prepare_file(p, facts, normalization_config(facts), patient_id, site, picture=True)
    item = _prepare_file(
        p, facts, ValidateConfig(image_size=facts.image_size), patient_id, site, picture=True
    )
    item.warnings.append("the model stores no normalization settings: the validate defaults were used")
    return item


def list_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files to explain: each given file, and every file under each given folder (hidden ones skipped)."""
    from isnetflow.dicom.source import list_files

    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = [Path(f.uri) for f in list_files(p, exclude=(".*/", ".*"))]
            if not found:
                raise ExplainError(f"{p}: no files in this folder")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise ExplainError(f"{p}: no such file or folder")
    return out


def _output_stem(path: Path, roots: Sequence[Path]) -> str:
    for root in roots:
        if root.is_dir():
            try:
                rel = path.resolve().relative_to(root.resolve())
            except ValueError:
                continue
            return "__".join(rel.with_suffix("").parts)
    return path.stem


def _overlay(image: np.ndarray, heatmap: np.ndarray, title: str, png: Path) -> Path:
    import matplotlib.pyplot as plt

    from isnetflow.viz.figures import save_figure  # selects the Agg backend

    scale = float(np.percentile(np.abs(heatmap), 99)) or 1e-12
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.6))
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("model input", fontsize=8)
    axes[1].imshow(image, cmap="gray", vmin=0, vmax=1)
    shown = axes[1].imshow(np.clip(heatmap / scale, -1, 1), cmap="bwr", vmin=-1, vmax=1, alpha=0.55)
    axes[1].set_title("LRP relevance (red: for, blue: against)", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.02, ticks=[-1, 0, 1])
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, png, dpi=110)


def _wrapper(loaded: LoadedClassifier) -> CXRClassifier:
    f = loaded.facts
    wrapper = CXRClassifier(f.classes, f.image_size, lrp_epsilon=f.lrp_epsilon)
    wrapper.module = loaded.module.eval()
    return wrapper


def explain_files(
    loaded: LoadedClassifier,
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    patient_id: str | None = None,
    site: str | None = None,
) -> dict[str, Any]:
    """Explain every input file with ``loaded``; write the files listed in the module docstring.

    Returns the summary written to ``explanations.json``: ``{"model": ..., "images": [...]}`` where each
    image is ``{"file", "status": "explained", "scores", ...}`` or ``{"file", "status": "refused",
    "reason", "reason_code"}``.
    """
    files = list_inputs(paths)  # first: a call that cannot run writes nothing
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roots = [Path(p) for p in paths]
    facts = loaded.facts
    wrapper = _wrapper(loaded)
    norm = dict(facts.normalization or {})
    normalization = {
        "validate": {k: norm.get(k) for k in ("window", "percentiles", "image_size", "image_format")},
        "model_input_size": facts.image_size,
    }
    records: list[dict[str, Any]] = []
    for path in files:
        try:
            item = prepare_file(path, facts, patient_id=patient_id, site=site)
        except InputError as exc:
            records.append(
                {"file": str(path), "status": "refused", "reason": exc.reason, "reason_code": exc.code}
            )
            continue
        x = item.image[None, None]
        frame = wrapper.predict(None, x, params={EXPLAIN_PARAM: True})
        scores = {c: float(frame[c].iloc[0]) for c in facts.classes}
        explained = str(frame[EXPLAINED_CLASS].iloc[0])
        heatmap = np.asarray(frame[HEATMAP].iloc[0], dtype=np.float32)
        stem = _output_stem(path, roots)
        np.save(out / f"{stem}.heatmap.npy", heatmap, allow_pickle=False)
        title = f"{path.name}: " + ", ".join(f"P({c}) = {p:.3f}" for c, p in scores.items())
        title += f"\nexplained: {explained} ({facts.mode or 'model'} {facts.architecture})".rstrip()
        _overlay(item.image, heatmap, title, out / f"{stem}.overlay.png")
        positive = np.clip(heatmap, 0, None)
        record = {
            "file": str(path),
            "status": "explained",
            "kind": item.kind,
            "scores": scores,
            "predicted_class": max(scores, key=lambda c: scores[c]),
            "explained_class": explained,
            "heatmap": {
                "method": EXPLAIN_METHOD,
                "epsilon": facts.lrp_epsilon,
                "shape": list(heatmap.shape),
                "sum": float(heatmap.sum()),
                "positive_sum": float(positive.sum()),
                "file": f"{stem}.heatmap.npy",
            },
            "overlay": f"{stem}.overlay.png",
            "normalization": normalization,
            "warnings": item.warnings,
            "header": item.header,
        }
        (out / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str))
        records.append(record)
    summary = {
        "model": {
            "uri": facts.source_uri,
            "run_id": facts.run_id,
            "mode": facts.mode,
            "architecture": facts.architecture,
            "classes": facts.classes,
            "image_size": facts.image_size,
        },
        "images": records,
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
    return summary
