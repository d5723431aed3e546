"""Evaluate stage: a trained classifier on the internal test split and each external hospital.

Inputs: a model URI (local ``model.pt`` / its folder, ``runs:/...`` or ``models:/...``), the validate
stage's output (``manifest.csv`` + normalized images) and the lung masks. The split is the training
run's own: its ``splits.csv`` (:mod:`isnetflow.training.splitfile`), found with the model and checked
against the digest the training recorded, so ``internal_test`` is exactly the training run's held-out
patients (see :mod:`isnetflow.evaluation.core` for the keys). A model without one (trained before it was
stored) is refused unless ``evaluate.recompute_split``: then the split is recomputed from the seed and
fractions that come with the model, and ``evaluation.json`` (``data.split_recomputed``) and the report
say so.

Outputs under ``out``::

    evaluation.json        all numbers (documented keys; NaN written as null)
    report.html            self-contained report (tables + embedded figures), readable without MLflow
    figures/roc.png        ROC curves: internal test, pooled external, every site
    figures/reliability.png
    figures/heatmaps.png   zennit heatmaps: internal/external x correct/incorrect
    figures/counterfactual.png   background-swap examples
    predictions.csv        per evaluated image: key, site, split, label, score, predicted

When a tracking server is in use (``tracking_uri``, ``MLFLOW_TRACKING_URI``, or an MLflow model URI,
which needs one: then the local default store of :func:`~isnetflow.registry.tracking.resolve_tracking_uri`)
the same files and the headline metrics are logged to a new run tagged ``isnetflow.stage=evaluate``
and ``isnetflow.evaluated_run_id=<training run>``, which is how ``isnetflow promote`` finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from isnetflow import __version__
from isnetflow.artifacts import json_safe
from isnetflow.artifacts.evaluation import EVALUATION_FILE, EvaluatedModel, EvaluationData, EvaluationReport
from isnetflow.audit.counterfactual import swap_background
from isnetflow.config import EvaluateConfig, TrainConfig
from isnetflow.evaluation.core import EvaluationError, EvaluationResult, evaluate_model
from isnetflow.evaluation.io import EvaluateStageError, held_out_split, load_evaluation_data
from isnetflow.evaluation.plots import counterfactual_figure, reliability_figure, roc_figure
from isnetflow.evaluation.report import flat_metrics, render_html
from isnetflow.names import EXPERIMENT
from isnetflow.registry.classifier import ModelLoadError, load_classifier
from isnetflow.registry.lineage import log_manifest_input
from isnetflow.registry.tracking import (
    DEFAULT_HOME,
    flatten,
    is_mlflow_uri,
    resolve_tracking_uri,
    use_tracking,
)
from isnetflow.training.data import TrainData
from isnetflow.training.splits import UNLISTED
from isnetflow.validation.fingerprint import data_fingerprint
from isnetflow.validation.manifest import manifest_sha256
from isnetflow.viz.heatmaps import heatmap_gallery

log = logging.getLogger(__name__)

# EvaluateStageError is defined in isnetflow.evaluation.io (shared with the promote stage); it is the error
# this stage raises, so it stays importable from here.
__all__ = ["EvaluateStageError", "run"]


def _gallery(res: EvaluationResult, data: TrainData, per_group: int, png: Path) -> Path | None:
    sample = res.audit
    if sample is None or sample.indices.size == 0 or per_group == 0:
        return None
    thr = float(res.payload["threshold"]["value"])
    picks: list[int] = []
    titles: list[str] = []
    for role in ("internal", "external"):
        for correct in (True, False):
            n = 0
            for k, i in enumerate(sample.indices):
                is_ext = data.splits[i] == "external"
                ok = bool((res.scores[i] >= thr) == bool(res.targets[i]))
                if (is_ext == (role == "external")) and ok == correct and n < per_group:
                    picks.append(k)
                    titles.append(
                        f"{role} {'correct' if correct else 'WRONG'}\n{data.sites[i][:20]}\n"
                        f"{data.classes[int(data.labels[i])]} s={res.scores[i]:.2f} bg={sample.shares[k]:.2f}"
                    )
                    n += 1
    if not picks:
        return None
    idx = sample.indices[picks]
    return heatmap_gallery(
        data.images[idx].numpy()[:, 0],
        sample.relevance[picks][:, 0],
        data.masks[idx].numpy()[:, 0],
        titles,
        png,
        suptitle="zennit LRP relevance for the explained class (red +, blue -); green: lung mask",
    )


def _counterfactual_examples(res: EvaluationResult, data: TrainData, png: Path, n: int = 4) -> Path | None:
    cf = res.counterfactual
    if cf is None or not cf.recipients:
        return None
    order = np.argsort(-np.abs(np.subtract(cf.composite_scores, cf.original_scores)))[:n]
    imgs, masks = data.images.numpy(), data.masks.numpy()
    rec = [cf.recipients[k] for k in order]
    don = [cf.donors[k] for k in order]
    comps = np.stack(
        [swap_background(imgs[r], masks[r], imgs[d], masks[d])[0] for r, d in zip(rec, don, strict=True)]
    )
    captions = [
        f"{data.sites[r][:16]} on background of {data.sites[d][:16]}: "
        f"{cf.original_scores[k]:.2f} -> {cf.composite_scores[k]:.2f}{' FLIP' if cf.flipped[k] else ''}"
        for k, r, d in zip(order, rec, don, strict=True)
    ]
    return counterfactual_figure(imgs[rec][:, 0], imgs[don][:, 0], comps, captions, png)


def _predictions_frame(res: EvaluationResult, data: TrainData) -> pd.DataFrame:
    keep = [i for i, sp in enumerate(data.splits) if sp in ("val", "test", "external")]
    thr = float(res.payload["threshold"]["value"])
    return pd.DataFrame(
        {
            "key": [data.keys[i] for i in keep],
            "patient_id": [data.patient_ids[i] for i in keep],
            "site": [data.sites[i] for i in keep],
            "split": [data.splits[i] for i in keep],
            "label": [data.classes[int(data.labels[i])] for i in keep],
            "score": [float(res.scores[i]) for i in keep],
            "predicted_positive": [bool(res.scores[i] >= thr) for i in keep],
            **{f"p_{c}": res.proba[keep, j] for j, c in enumerate(data.classes)},
        }
    )


def run(
    cfg: EvaluateConfig,
    model_uri: str,
    validated: str | Path,
    masks: str | Path | None,
    out: str | Path,
    *,
    sites: Sequence[str] = (),
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    train_fallback: TrainConfig | None = None,
    audit: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model_uri`` on ``validated`` (+ ``masks``), write ``out/``, track; returns the payload.

    ``tracking_uri``: the store the command or task resolved; None: $MLFLOW_TRACKING_URI, else the local
    store for an MLflow model URI, else no tracking (the same rule the commands apply at their edge).
    """
    out = Path(out)
    validated = Path(validated)
    if not (validated / "manifest.csv").is_file():
        raise EvaluateStageError(f"{validated / 'manifest.csv'}: not found (run `isnetflow validate` first)")
    store = resolve_tracking_uri(tracking_uri, DEFAULT_HOME if is_mlflow_uri(model_uri) else None)
    track = store is not None
    if track:
        use_tracking(store, experiment)
    try:
        loaded = load_classifier(model_uri, fallback=train_fallback)
    except ModelLoadError as exc:
        raise EvaluateStageError(str(exc)) from exc
    held = held_out_split(
        loaded.splits_csv, loaded.facts.splits_sha256, loaded.splits_location, recompute=cfg.recompute_split
    )
    if held.recomputed:
        log.warning(
            "%s has no stored held-out patient list: evaluating on a split recomputed from seed %d "
            "(evaluate.recompute_split)",
            model_uri,
            loaded.facts.seed,
        )
    data = load_evaluation_data(
        validated, masks, loaded.facts.train_config(), loaded.facts.classes, held_out=held.patients
    )
    log.info(
        "evaluating %s on %d images (%s)",
        model_uri,
        len(data),
        {s: data.splits.count(s) for s in set(data.splits)},
    )
    try:
        res = evaluate_model(loaded.module, data, cfg, sites=list(sites), audit=audit, progress=progress)
    except EvaluationError as exc:
        raise EvaluateStageError(f"{validated}: {exc}") from exc

    f = loaded.facts
    counted = ("train", "val", "test", "external", *([UNLISTED] if UNLISTED in data.splits else []))
    report = EvaluationReport.of(json_safe(res.payload)).model_copy(
        update={
            "schema_version": 1,
            "generator": f"isnetflow {__version__}",
            "model": EvaluatedModel(
                uri=model_uri,
                run_id=f.run_id,
                mode=f.mode,
                architecture=f.architecture,
                image_size=f.image_size,
                classes=f.classes,
                score=f"1 - P({f.classes[0]})",
            ),
            "data": EvaluationData(
                validated=str(validated.resolve()),
                masks=str(Path(masks).resolve()) if masks is not None else None,
                manifest_sha256=manifest_sha256(validated),
                data_fingerprint=data_fingerprint(validated),
                n_images=len(data),
                splits={s: data.splits.count(s) for s in counted},
                split_recomputed=held.recomputed,
                splits_file=held.file or None,
                splits_sha256=held.sha256 or None,
                split_seed=f.seed,
                val_fraction=f.val_fraction,
                test_fraction=f.test_fraction,
                split_source=f.split_source,
            ),
            "config": cfg.model_dump(mode="json"),
        }
    )
    figs_dir = out / "figures"
    figures: list[tuple[str, Path]] = [
        (
            "ROC curves per split and site",
            roc_figure(res.curves, figs_dir / "roc.png", title=f"ROC: {model_uri}"),
        ),
        ("Reliability diagram", reliability_figure(res.reliability, figs_dir / "reliability.png")),
    ]
    gallery = _gallery(res, data, cfg.gallery_per_group, figs_dir / "heatmaps.png")
    if gallery is not None:
        figures.append(("Heatmap gallery: internal/external x correct/incorrect", gallery))
    cf_png = _counterfactual_examples(res, data, figs_dir / "counterfactual.png")
    if cf_png is not None:
        figures.append(("Counterfactual background swap: largest score changes", cf_png))
    report.figures = {p.stem: str(p.relative_to(out)) for _, p in figures}
    safe = report.as_json()
    out.mkdir(parents=True, exist_ok=True)
    report.write_to(out)
    (out / "report.html").write_text(render_html(safe, figures, title=f"Evaluation of {model_uri}"))
    _predictions_frame(res, data).to_csv(out / "predictions.csv", index=False)

    if track:
        import mlflow

        tags = {
            "isnetflow.stage": "evaluate",
            "isnetflow.version": __version__,
            "isnetflow.evaluated_model_uri": model_uri,
            "isnetflow.evaluated_run_id": f.run_id,
            "data.manifest_sha256": report.data.manifest_sha256 if report.data is not None else None,
            "isnetflow.split_recomputed": str(held.recomputed).lower(),
        }
        with mlflow.start_run(run_name=f"evaluate-{f.mode or 'model'}", tags=tags) as active:
            log_manifest_input(validated, "evaluation")
            mlflow.log_params(flatten(cfg.model_dump(mode="json")))
            mlflow.log_metrics(flat_metrics(safe))
            for _, png in figures:
                mlflow.log_artifact(str(png), artifact_path="figures")
            mlflow.log_artifact(str(out / EVALUATION_FILE))
            mlflow.log_artifact(str(out / "report.html"))
            mlflow.log_artifact(str(out / "predictions.csv"))
            report.evaluation_run_id = active.info.run_id
        report.write_to(out)
    return report.as_json()
