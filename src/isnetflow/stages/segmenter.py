"""Lung-segmenter stage: train it (``isnetflow train-segmenter``) and register the shipped weights as the
MLflow model ``lung-segmenter`` (loading one back, from a path or MLflow, is
:func:`isnetflow.registry.segmenter.load_segmenter`).

This is the layer that does I/O and MLflow tracking; the numerical work lives in
:mod:`isnetflow.masks`.

Tracking URI of a training: ``cfg.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<out>/mlflow.db`` with artifacts in ``<out>/mlartifacts``
(:func:`~isnetflow.registry.tracking.resolve_tracking_uri` with ``out`` as the home; the command resolves
it and passes it down). For sqlite stores the experiment's artifact location is always
put next to the database file, never in the current directory.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from mlflow.tracking import MlflowClient

from isnetflow import __version__
from isnetflow.config import SegmenterTrainConfig
from isnetflow.masks import LungSegmenter, SegmenterSpec, save_network, sha256_file, train_segmenter
from isnetflow.masks.card import model_card
from isnetflow.masks.data import find_pairs, grouped_split, load_original, prepare_pair, synthetic_samples
from isnetflow.masks.evaluate import EvalItem, evaluate, synthetic_items
from isnetflow.masks.gallery import GalleryTile, overlay, write_gallery
from isnetflow.masks.metrics import dice
from isnetflow.masks.network import resolve_spec_path
from isnetflow.names import SEGMENTER_MODEL
from isnetflow.registry.tracking import (
    get_or_create_experiment,
    resolve_tracking_uri,
    scoped_tracking,
    sqlite_artifact_root,
)

log = logging.getLogger(__name__)

__all__ = [
    "REGISTERED_MODEL",
    "LungSegmenterModel",
    "register_shipped",
    "train",
]

#: Registered-model name of the lung segmenter in the MLflow model registry.
REGISTERED_MODEL = SEGMENTER_MODEL
_EXPERIMENT = SEGMENTER_MODEL


# --------------------------------------------------------------------------------------------------
# MLflow plumbing
# --------------------------------------------------------------------------------------------------


def _experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """Get or create experiment ``name``; sqlite stores keep its artifacts in ``mlartifacts/<name>`` next to
    the database."""
    root = sqlite_artifact_root(tracking_uri)
    return get_or_create_experiment(client, name, artifact_root=root / name if root is not None else None)


class LungSegmenterModel(PythonModel):
    """MLflow pyfunc wrapper: ``predict`` takes images (``(H, W)`` or ``(N, H, W)`` floats in [0, 1],
    bright = dense) and returns uint8 masks (255 lung) of the same shape. Needs isnetflow installed."""

    def load_context(self, context: Any) -> None:
        """Load the segmenter from the model's ``spec`` artifact."""
        self.segmenter = LungSegmenter.load(context.artifacts["spec"])

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """The uint8 lung masks (255 lung) of ``model_input``, shaped like it; ``params`` are unused."""
        arr = np.asarray(model_input, dtype=np.float32)
        if arr.ndim not in (2, 3):
            raise ValueError(f"expected images shaped (H, W) or (N, H, W), got {arr.shape}")
        batch = arr[None] if arr.ndim == 2 else arr
        masks = np.stack([p.mask for p in self.segmenter.predict(list(batch))]).astype(np.uint8) * 255
        return masks[0] if arr.ndim == 2 else masks


def _requirements() -> list[str]:
    reqs = []
    for dist in ("torch", "monai", "numpy", "scipy", "pillow", "pydicom"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


_MODEL_CODE = """\
# MLflow "models from code" entry point: the pyfunc is isnetflow's own class (isnetflow must be installed).
import mlflow.models

from isnetflow.stages.segmenter import LungSegmenterModel

mlflow.models.set_model(LungSegmenterModel())
"""


def _log_model(spec_path: Path, card: Path | None) -> Any:
    """Log the weights as a pyfunc model (artifacts: spec JSON, weights, model card)."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    spec = SegmenterSpec.load(spec_path)
    artifacts = {"spec": str(spec_path), "weights": str(spec_path.parent / spec.weights_file)}
    if card is not None and card.is_file():
        artifacts["model_card"] = str(card)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
    )
    with tempfile.TemporaryDirectory(prefix="isnetflow-pyfunc-") as tmp:
        code = Path(tmp) / "lung_segmenter_model.py"
        code.write_text(_MODEL_CODE)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            artifacts=artifacts,
            signature=signature,
            pip_requirements=_requirements(),
        )


def _find_version(client: MlflowClient, name: str, sha256: str) -> str | None:
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for v in sorted(versions, key=lambda v: int(v.version)):
        if (v.tags or {}).get("weights_sha256") == sha256:
            return str(v.version)
    return None


def _flat_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    held = evaluation.get("held_out") or {}
    if held:
        out["heldout_dice_mean"] = held["clean"]["dice"]["mean"]
        out["heldout_dice_sd"] = held["clean"]["dice"]["sd"]
        out["heldout_hd95_px_mean"] = held["clean"]["hd95_px"]["mean"]
        if "perturbed_all" in held:
            out["heldout_perturbed_dice_mean"] = held["perturbed_all"]["mean"]
        for name, res in held.get("perturbed", {}).items():
            out[f"heldout_{name}_dice_mean"] = res["dice"]["mean"]
    synth = evaluation.get("synthetic") or {}
    if synth:
        out["synthetic_dice_mean"] = synth["phantom_convention"]["dice"]["mean"]
        out["synthetic_real_convention_dice_mean"] = synth["real_convention"]["dice"]["mean"]
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and np.isfinite(v)}


def register_shipped(
    tracking_uri: str, *, name: str = REGISTERED_MODEL, spec_path: str | Path | None = None
) -> str:
    """Log the shipped weights (or ``spec_path``'s) as a run + a version of registered model ``name``.

    Idempotent: when a version tagged with the same ``weights_sha256`` exists, its number is returned
    and nothing is logged. Returns the model version (a string, as MLflow reports it).
    """
    spec_file = resolve_spec_path(spec_path)
    spec = SegmenterSpec.load(spec_file)
    weights = spec_file.parent / spec.weights_file
    sha = sha256_file(weights)
    if spec.weights_sha256 and spec.weights_sha256 != sha:
        raise ValueError(f"{weights}: sha256 does not match {spec_file}")
    with scoped_tracking(tracking_uri) as client:
        found = _find_version(client, name, sha)
        if found is not None:
            log.info("%s version %s already holds weights %s", name, found, sha[:12])
            return found
        exp_id = _experiment_id(client, _EXPERIMENT, tracking_uri)
        card = spec_file.parent / "MODEL_CARD.md"
        with mlflow.start_run(experiment_id=exp_id, run_name=f"shipped-{sha[:12]}"):
            mlflow.set_tags(
                {"isnetflow.version": __version__, "weights_sha256": sha, "source": "shipped weights"}
            )
            mlflow.log_params(
                {
                    "architecture": spec.architecture,
                    "image_size": spec.image_size,
                    "percentiles": list(spec.percentiles),
                    "threshold": spec.threshold,
                    "weights_file": spec.weights_file,
                    **{f"network.{k}": v for k, v in spec.network.items()},
                }
            )
            mlflow.log_metrics(_flat_metrics(spec.training.get("evaluation", {})))
            info = _log_model(spec_file, card)
        version = mlflow.register_model(
            info.model_uri,
            name,
            tags={"weights_sha256": sha, "architecture": spec.architecture, "isnetflow.version": __version__},
        )
        client.update_model_version(
            name,
            version.version,
            description=f"isnetflow lung segmenter ({spec.architecture}, {spec.image_size} px), "
            f"weights sha256 {sha}",
        )
        log.info("registered %s version %s (weights %s)", name, version.version, sha[:12])
        return str(version.version)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _log_epoch(epoch: int, metrics: dict[str, float]) -> None:
    mlflow.log_metrics(metrics, step=epoch)


def _describe_start(init_from: str | None) -> str | None:
    """The weights a fine-tuning started from, named by their sha256 (None: random initialization)."""
    if init_from is None:
        return None
    spec = SegmenterSpec.load(resolve_spec_path(None if init_from == "shipped" else init_from))
    label = "the segmenter shipped at the time" if init_from == "shipped" else init_from
    return f"{label} (weights sha256 {spec.weights_sha256})"


def _params(cfg: SegmenterTrainConfig) -> dict[str, Any]:
    return {
        k: (json.dumps(v) if isinstance(v, list | tuple | dict) else v) for k, v in cfg.model_dump().items()
    }


def _validation_gallery(seg: LungSegmenter, items: list[EvalItem], path: Path, title: str) -> Path:
    preds = seg.predict([it.image for it in items])
    tiles = []
    for it, p in zip(items, preds, strict=True):
        d = dice(p.mask, it.lung, it.ignore)
        tiles.append(
            GalleryTile(
                overlay(it.image, p.mask, it.lung, it.ignore), f"{it.name[:22]}\nDice {d:.3f}", d >= 0.9
            )
        )
    return write_gallery(tiles, path, columns=6, tile=200, title=title)


def train(
    cfg: SegmenterTrainConfig,
    images: str | Path,
    masks: str | Path,
    out: str | Path,
    *,
    manifest: str | Path | None = None,
    command: str | None = None,
    progress: bool = True,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Train a lung segmenter on image/mask pairs (+ synthetic phantoms), evaluate it, write it to ``out``.

    Writes ``lung_segmenter.pt`` + ``.json``, ``MODEL_CARD.md``, ``evaluation.json``, ``history.csv``,
    ``split.csv`` and ``validation_overlays.png``, and logs params, per-epoch metrics, these files and a
    pyfunc model to MLflow (registered as ``cfg.registered_model`` when set). Returns a summary dict.

    ``tracking_uri``: the store the command resolved; None: ``cfg.tracking_uri``, else
    ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<out>/mlflow.db``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tracking_uri = tracking_uri or resolve_tracking_uri(cfg.tracking_uri, out)

    pairs = find_pairs(images, masks, manifest)
    train_recs, val_recs = grouped_split(pairs, cfg.val_fraction, cfg.seed)
    with (out / "split.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "patient_id", "split", "image", "mask"])
        for split, recs in (("train", train_recs), ("val", val_recs)):
            for r in recs:
                w.writerow([r.name, r.patient_id, split, r.image, r.mask])
    log.info(
        "segmenter data: %d train images (%d patients), %d validation images (%d patients)",
        len(train_recs),
        len({r.patient_id for r in train_recs}),
        len(val_recs),
        len({r.patient_id for r in val_recs}),
    )
    from tqdm import tqdm

    def load(recs: list[Any], desc: str) -> list[Any]:
        return [
            prepare_pair(r, cfg.image_size, cfg.percentiles)
            for r in tqdm(recs, desc=desc, disable=not progress)
        ]

    train_samples = load(train_recs, "load train")
    val_samples = load(val_recs, "load val")
    train_samples += synthetic_samples(
        cfg.synthetic_n,
        cfg.image_size,
        seed=cfg.seed,
        heart=cfg.synthetic_heart,
        percentiles=cfg.percentiles,
        progress=progress,
    )

    with scoped_tracking(tracking_uri) as client:
        exp_id = _experiment_id(client, cfg.experiment, tracking_uri)
        with mlflow.start_run(experiment_id=exp_id, run_name="train-segmenter") as run:
            mlflow.set_tags({"isnetflow.version": __version__, "command": command or ""})
            mlflow.log_params(_params(cfg))
            mlflow.log_params(
                {
                    "data.images": str(images),
                    "data.masks": str(masks),
                    "data.manifest": str(manifest or ""),
                    "data.n_train": len(train_recs),
                    "data.n_val": len(val_recs),
                    "data.n_train_patients": len({r.patient_id for r in train_recs}),
                    "data.n_val_patients": len({r.patient_id for r in val_recs}),
                }
            )
            result = train_segmenter(
                train_samples,
                val_samples,
                cfg,
                on_epoch=_log_epoch,
                progress=progress,
            )
            train_seconds = time.perf_counter() - t0
            n_params = sum(p.numel() for p in result.model.parameters())
            spec = result.spec.model_copy(
                update={
                    "training": {
                        "command": command,
                        "data": f"{len(pairs)} real image/mask pairs from {images} (masks {masks}); "
                        f"patients from {manifest or 'file stems'}",
                        "split": (
                            "fixed by the manifest's split column"
                            if any(r.split for r in pairs)
                            else f"patient-grouped, val_fraction {cfg.val_fraction}, seed {cfg.seed}"
                        )
                        + ": "
                        f"{len(train_recs)} train / {len(val_recs)} validation images "
                        f"({len({r.patient_id for r in val_recs})} validation patients)",
                        "init_from": _describe_start(cfg.init_from),
                        "synthetic": f"{cfg.synthetic_n} phantoms, {cfg.synthetic_fraction:.0%} of each "
                        f"epoch, heart region: {cfg.synthetic_heart}",
                        "validation_images": [r.name for r in val_recs],
                        "validation_patients": sorted({r.patient_id for r in val_recs}),
                        "augmentation": cfg.augmentation,
                        "schedule": f"AdamW lr {cfg.learning_rate}, cosine over {cfg.epochs} epochs, batch "
                        f"{cfg.batch_size}, early stopping on {cfg.monitor} (patience {cfg.patience}); "
                        f"best epoch {result.best_epoch} of {len(result.history)}",
                        "wall_seconds": round(train_seconds, 1),
                        "hardware": f"CPU ({platform.machine()}, {os.cpu_count()} cores), "
                        f"{torch.get_num_threads()} torch threads",
                        "parameters": n_params,
                        "isnetflow_version": __version__,
                    }
                }
            )
            spec_path = save_network(result.model, spec, out)
            seg = LungSegmenter.load(spec_path)

            evaluation: dict[str, Any] = {}
            gallery_items: list[EvalItem] = []
            if val_recs:
                items = [EvalItem(r.name, *load_original(r)) for r in val_recs]
                evaluation["held_out"] = evaluate(seg, items, None, progress=progress)
                gallery_items = items
            if cfg.eval_synthetic_n:
                raw, adjusted = synthetic_items(cfg.eval_synthetic_n, seed=0, size=cfg.image_size)
                evaluation["synthetic"] = {
                    "n": cfg.eval_synthetic_n,
                    "seed": 0,
                    "phantom_convention": evaluate(seg, raw, [], progress=False)["clean"],
                    "real_convention": evaluate(seg, adjusted, [], progress=False)["clean"],
                }
                gallery_items = gallery_items or adjusted[:18]
            spec = SegmenterSpec.load(spec_path)
            spec.training["evaluation"] = evaluation
            spec.save(spec_path)
            (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
            card = out / "MODEL_CARD.md"
            card.write_text(model_card(spec, evaluation))
            with (out / "history.csv").open("w", newline="") as f:
                hw = csv.DictWriter(f, fieldnames=list(result.history[0]) if result.history else ["epoch"])
                hw.writeheader()
                hw.writerows(result.history)
            if gallery_items:
                _validation_gallery(
                    seg, gallery_items, out / "validation_overlays.png", "red: prediction, green: reference"
                )
            mlflow.log_metrics(_flat_metrics(evaluation))
            for name in (
                "MODEL_CARD.md",
                "evaluation.json",
                "history.csv",
                "split.csv",
                "validation_overlays.png",
            ):
                if (out / name).is_file():
                    mlflow.log_artifact(str(out / name))
            info = _log_model(spec_path, card)
            run_id = run.info.run_id
        version = None
        if cfg.registered_model:
            mv = mlflow.register_model(
                info.model_uri,
                cfg.registered_model,
                tags={"weights_sha256": str(spec.weights_sha256), "architecture": spec.architecture},
            )
            version = str(mv.version)
    summary = {
        "out": str(out),
        "spec": str(spec_path),
        "weights_sha256": spec.weights_sha256,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "best_score": result.best_score,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "tracking_uri": tracking_uri,
        "run_id": run_id,
        "model_uri": info.model_uri,
        "registered_version": version,
        "metrics": _flat_metrics(evaluation),
    }
    return summary
