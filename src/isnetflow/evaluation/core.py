"""Evaluation of one classifier on the internal test split and every external hospital.

Split logic
-----------
The data come as a :class:`~isnetflow.training.data.TrainData` whose ``splits`` were assigned by
:func:`isnetflow.training.splits.assign_splits` with the *training run's* seed and fractions, so the
internal test patients are exactly the patients the model never saw:

* ``internal_val`` (split ``val``): only used to choose the operating threshold (Youden's J), and
  reported for reference;
* ``internal_test`` (split ``test``): held-out patients of the training hospitals;
* ``external_pooled`` (split ``external``): every image of the hospitals never trained on;
* ``sites.<name>``: each site separately -- its ``test`` images for an internal site, all of its
  images for an external one.

A site filter (``--sites`` / ``EvaluateConfig.sites``) restricts the per-site entries and the pooled
sets to the named sites; when it names no internal site, ``internal_test`` still pools every internal
site's test patients so that the internal reference and the gap stay defined.

Images are scored as abnormal vs normal (:func:`isnetflow.evaluation.metrics.positive_scores`).

Output keys (``evaluation.json``, see :func:`evaluate_model`; NaN is written as ``null``; the file is
typed as :class:`~isnetflow.artifacts.evaluation.EvaluationReport`, which the gates, tags and summaries
read, and its metric paths are constants of :mod:`isnetflow.evaluation.keys`)::

    threshold.{value, method, n}
    splits.{internal_val, internal_test, external_pooled}.{n, n_patients, n_positive, auc, auc_ci_low,
        auc_ci_high, auc_ci_level, auc_ci_replicates, f1, sensitivity, specificity, balanced_accuracy,
        brier, ece, threshold}
    sites.<name>.{role, split, ...the same metrics}
    gap.internal_minus_external_auc
    audit.background_share.{pooled, internal, external, per_site.<name>, background_area, n_images,
        composite, canonizer, target}   (background_area: mean share of the image outside the lungs,
        i.e. the share an explanation spread evenly over the image would get)
    audit.counterfactual.{flip_rate, mean_abs_score_change, n_pairs, threshold, pairing, construction,
        per_site.<name>.{flip_rate, mean_abs_score_change, n_pairs}}
    classification_metrics.{internal_test, external_pooled}.{roc.{fpr, tpr, thresholds},
        confusion_matrix.{categories, matrix}}        (for kfp ClassificationMetrics)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from isnetflow.audit.counterfactual import CounterfactualResult, counterfactual_test
from isnetflow.audit.explain import audit_relevance, background_share, explained_classes
from isnetflow.config import EvaluateConfig
from isnetflow.evaluation import keys
from isnetflow.evaluation.bootstrap import bootstrap_ci
from isnetflow.evaluation.metrics import (
    ReliabilityCurve,
    binary_metrics,
    binary_targets,
    confusion,
    positive_scores,
    rank_auc,
    reliability_curve,
    roc_points,
    youden_threshold,
)
from isnetflow.nets import predict_proba
from isnetflow.training.data import TrainData

__all__ = [
    "AuditSample",
    "EvaluationError",
    "EvaluationResult",
    "evaluate_model",
    "evaluate_predictions",
    "select_sites",
    "set_metrics",
]

SPLIT_SETS = {keys.INTERNAL_VAL: ("val",), keys.INTERNAL_TEST: ("test",), keys.EXTERNAL_POOLED: ("external",)}


class EvaluationError(ValueError):
    """The data cannot be evaluated as asked (message names the problem)."""


def set_metrics(
    y: np.ndarray,
    score: np.ndarray,
    patient_ids: Sequence[str],
    threshold: float,
    cfg: EvaluateConfig,
) -> dict[str, Any]:
    """Metrics of one image set plus a patient-level bootstrap CI of its AUC."""
    y = np.asarray(y, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    m = binary_metrics(y, score, threshold, ece_bins=cfg.ece_bins).as_dict()
    ci = bootstrap_ci(
        lambda idx: rank_auc(y[idx], score[idx]),  # roc_auc_score's value, without its per-call overhead
        list(patient_ids),
        n_boot=cfg.n_boot if y.size else 0,
        level=cfg.ci_level,
        seed=cfg.seed,
    )
    m.update(
        n_patients=len(set(patient_ids)),
        auc_ci_low=ci.low,
        auc_ci_high=ci.high,
        auc_ci_level=ci.level,
        auc_ci_replicates=ci.n_valid,
    )
    return m


def select_sites(data: TrainData, sites: Sequence[str]) -> list[str]:
    """The evaluated sites in first-seen order (all when ``sites`` is empty); unknown names raise."""
    present = list(dict.fromkeys(data.sites))
    if not sites:
        return present
    unknown = sorted(set(sites) - set(present))
    if unknown:
        raise EvaluationError(f"sites {unknown} are not in the data; available: {present}")
    return [s for s in present if s in set(sites)]


def _evaluated_indices(data: TrainData, sites: Sequence[str], splits: Sequence[str]) -> np.ndarray:
    keep = set(sites)
    return np.array(
        [
            i
            for i, (s, sp) in enumerate(zip(data.sites, data.splits, strict=True))
            if s in keep and sp in splits
        ],
        dtype=np.int64,
    )


def _split_indices(data: TrainData, evaluated: Sequence[str], name: str) -> np.ndarray:
    """Images of split set ``name`` among the evaluated sites.

    ``internal_val`` always uses every internal site (it only sets the threshold). ``internal_test`` uses
    the evaluated internal sites, or every internal site when none was selected (e.g. ``--sites`` naming
    external hospitals only), so the internal reference and the gap stay defined.
    """
    if name == keys.INTERNAL_VAL:
        return data.indices("val")
    if name == keys.INTERNAL_TEST and not any(_role_of_site(data, s) == "internal" for s in evaluated):
        return data.indices("test")
    return _evaluated_indices(data, evaluated, SPLIT_SETS[name])


def _choose_threshold(
    data: TrainData, y: np.ndarray, score: np.ndarray, cfg: EvaluateConfig
) -> dict[str, Any]:
    if cfg.threshold is not None:
        return {"value": float(cfg.threshold), "method": "fixed", "n": 0}
    val = data.indices("val")
    if val.size == 0 or np.unique(y[val]).size < 2:
        raise EvaluationError(
            f"the internal validation split has {val.size} images and "
            f"{np.unique(y[val]).size if val.size else 0} classes: cannot choose a threshold by Youden's J "
            "(set evaluate.threshold or check the split fractions)"
        )
    return {
        "value": youden_threshold(y[val], score[val]),
        "method": "youden_j_internal_val",
        "n": int(val.size),
    }


def _role_of_site(data: TrainData, site: str) -> str:
    splits = {sp for s, sp in zip(data.sites, data.splits, strict=True) if s == site}
    return "external" if splits == {"external"} else "internal"


def evaluate_predictions(
    data: TrainData, proba: np.ndarray, cfg: EvaluateConfig, *, sites: Sequence[str] = ()
) -> dict[str, Any]:
    """Threshold, split and site metrics, gap and kfp classification data from probabilities (pure)."""
    if proba.shape[0] != len(data):
        raise EvaluationError(f"{proba.shape[0]} predictions for {len(data)} images")
    y = binary_targets(data.labels.numpy())
    score = positive_scores(proba)
    evaluated = select_sites(data, sites or cfg.sites)
    thr = _choose_threshold(data, y, score, cfg)
    t = float(thr["value"])
    out: dict[str, Any] = {"threshold": thr, "splits": {}, "sites": {}, "evaluated_sites": evaluated}
    for name in SPLIT_SETS:
        idx = _split_indices(data, evaluated, name)
        out["splits"][name] = set_metrics(y[idx], score[idx], [data.patient_ids[i] for i in idx], t, cfg)
    for site in evaluated:
        role = _role_of_site(data, site)
        idx = _evaluated_indices(data, [site], ("external",) if role == "external" else ("test",))
        m = set_metrics(y[idx], score[idx], [data.patient_ids[i] for i in idx], t, cfg)
        out["sites"][site] = {"role": role, "split": "external" if role == "external" else "test", **m}
    keys.put(out, keys.AUC_GAP, keys.get(out, keys.INTERNAL_TEST_AUC) - keys.get(out, keys.EXTERNAL_AUC))
    negative = data.classes[0]
    categories = [negative, data.classes[1] if len(data.classes) == 2 else f"not {negative}"]
    out["classification_metrics"] = {}
    for name in (keys.INTERNAL_TEST, keys.EXTERNAL_POOLED):
        idx = _split_indices(data, evaluated, name)
        if idx.size and np.unique(y[idx]).size == 2:
            out["classification_metrics"][name] = {
                "roc": roc_points(y[idx], score[idx]),
                "confusion_matrix": {"categories": categories, "matrix": confusion(y[idx], score[idx], t)},
            }
    return out


@dataclass
class AuditSample:
    """The explained images (indices into the data) with their relevance maps, for the gallery."""

    indices: np.ndarray
    relevance: np.ndarray  # (n, 1, H, W)
    shares: np.ndarray  # (n,)
    targets: np.ndarray  # (n,) explained class per image


@dataclass
class EvaluationResult:
    """Everything the stage needs to write files: the JSON payload plus arrays for the figures."""

    payload: dict[str, Any]
    proba: np.ndarray
    scores: np.ndarray
    targets: np.ndarray  # binary targets
    audit: AuditSample | None = None
    counterfactual: CounterfactualResult | None = None
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    reliability: dict[str, ReliabilityCurve] = field(default_factory=dict)


def _audit_indices(data: TrainData, sites: Sequence[str], per_site: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = []
    for site in sites:
        role = _role_of_site(data, site)
        idx = _evaluated_indices(data, [site], ("external",) if role == "external" else ("test",))
        if idx.size:
            chosen.append(np.sort(rng.permutation(idx)[:per_site]))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def _mean(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    return float(v.mean()) if v.size else math.nan


def run_audit(
    model: nn.Module,
    data: TrainData,
    proba: np.ndarray,
    threshold: float,
    cfg: EvaluateConfig,
    sites: Sequence[str],
    *,
    progress: bool = False,
) -> tuple[dict[str, Any], AuditSample | None, CounterfactualResult | None]:
    """Background relevance share (zennit) per site and the counterfactual background swap."""
    audit: dict[str, Any] = {}
    sample: AuditSample | None = None
    if cfg.audit_per_site > 0:
        idx = _audit_indices(data, sites, cfg.audit_per_site, cfg.seed)
        targets = explained_classes(cfg.audit, data.labels.numpy()[idx], proba[idx])
        rel_parts = []
        step = max(1, cfg.batch_size // 2)
        for i in tqdm(range(0, idx.size, step), desc="audit (zennit)", unit="batch", disable=not progress):
            j = idx[i : i + step]
            rel_parts.append(
                audit_relevance(
                    model,
                    data.images[j],
                    torch.as_tensor(targets[i : i + step], dtype=torch.long),
                    cfg.audit,
                    batch_size=step,
                    num_threads=cfg.num_threads,
                )
            )
        rel = np.concatenate(rel_parts) if rel_parts else np.zeros((0, *data.images.shape[1:]), np.float32)
        audit_masks = data.masks.numpy()[idx]
        shares = background_share(rel, audit_masks)
        # what a model spreading relevance evenly over the image would score: the background's area
        area = 1.0 - audit_masks.reshape(len(idx), -1).mean(1) if idx.size else np.zeros(0)
        site_of = np.asarray([data.sites[i] for i in idx], dtype=object)
        ext = np.asarray([data.splits[i] == "external" for i in idx], dtype=bool)
        audit["background_share"] = {
            "pooled": _mean(shares),
            "internal": _mean(shares[~ext]),
            "external": _mean(shares[ext]),
            "per_site": {s: _mean(shares[site_of == s]) for s in sites if (site_of == s).any()},
            "background_area": _mean(area),
            "n_images": int(idx.size),
            "composite": cfg.audit.composite,
            "canonizer": "GraphMergeBatchNorm (torch.fx-verified conv->BN merges; other BNs: epsilon rule)",
            "target": cfg.audit.target,
        }
        sample = AuditSample(indices=idx, relevance=rel, shares=shares, targets=np.asarray(targets))
    cf: CounterfactualResult | None = None
    if cfg.counterfactual_max > 0:
        pool = np.concatenate(
            [
                _evaluated_indices(
                    data, [s], ("external",) if _role_of_site(data, s) == "external" else ("test",)
                )
                for s in sites
            ]
            or [np.zeros(0, dtype=np.int64)]
        )
        rng = np.random.default_rng(cfg.seed + 1)
        recipients = np.sort(rng.permutation(pool)[: cfg.counterfactual_max])
        y = binary_targets(data.labels.numpy())
        images = data.images.numpy()
        masks = data.masks.numpy()

        def score_fn(batch: np.ndarray) -> np.ndarray:
            return positive_scores(predict_proba(model, torch.from_numpy(batch), batch_size=cfg.batch_size))

        cf = counterfactual_test(
            score_fn,
            images,
            masks,
            data.sites,
            [int(v) for v in y],
            recipients.tolist(),
            pool.tolist(),
            threshold=threshold,
            pairing=cfg.counterfactual_pairing,
            seed=cfg.seed,
            original_scores=positive_scores(proba),
        )
        audit["counterfactual"] = cf.summary()
    return audit, sample, cf


def evaluate_model(
    model: nn.Module,
    data: TrainData,
    cfg: EvaluateConfig,
    *,
    sites: Sequence[str] = (),
    audit: bool = True,
    progress: bool = False,
) -> EvaluationResult:
    """Predict every image once, then compute :func:`evaluate_predictions` and (optionally) the audit."""
    t0 = time.perf_counter()
    model = model.eval()
    old_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        needed = np.array(
            [i for i, sp in enumerate(data.splits) if sp in ("val", "test", "external")], dtype=np.int64
        )
        proba = np.full((len(data), len(data.classes)), np.nan)
        if needed.size:
            proba[needed] = predict_proba(
                model, data.images[needed], batch_size=cfg.batch_size, progress=progress
            )
        payload = evaluate_predictions(data, proba, cfg, sites=sites)
        evaluated = payload["evaluated_sites"]
        sample, cf = None, None
        if audit:
            payload["audit"], sample, cf = run_audit(
                model, data, proba, payload["threshold"]["value"], cfg, evaluated, progress=progress
            )
    finally:
        torch.set_num_threads(old_threads)
    y = binary_targets(data.labels.numpy())
    score = np.where(np.isfinite(proba).all(1), positive_scores(np.nan_to_num(proba)), np.nan)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, label in ((keys.INTERNAL_TEST, "internal test"), (keys.EXTERNAL_POOLED, "external pooled")):
        idx = _split_indices(data, evaluated, name)
        curves[label] = (y[idx], score[idx])
    for site in evaluated:
        info = payload["sites"][site]
        idx = _evaluated_indices(data, [site], (info["split"],))
        curves[f"{site} ({info['role']})"] = (y[idx], score[idx])
    reliability = {
        label: reliability_curve(curves[label][0], curves[label][1], cfg.ece_bins)
        for label in ("internal test", "external pooled")
    }
    payload["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return EvaluationResult(
        payload=payload,
        proba=proba,
        scores=score,
        targets=y,
        audit=sample,
        counterfactual=cf,
        curves=curves,
        reliability=reliability,
    )
