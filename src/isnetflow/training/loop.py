"""The training loop shared by the ISNet and the standard baseline.

``train(cfg, data)`` is a plain function: it builds the network, runs the schedule, evaluates every
epoch on the internal validation split, checkpoints every ``cfg.checkpoint_every`` optimizer steps and
returns the selected model. An ISNet first trains ``cfg.warmup_epochs`` of plain cross-entropy on
``cfg.warmup_inputs`` (default: background-swapped composites, so the warm-up never learns a background
shortcut); then the heatmap loss comes on, on batches of which ``cfg.isnet_swap_fraction`` are
background-swapped, with the heatmap gradient capped at ``heatmap.grad_balance`` times the
cross-entropy gradient. With ``cfg.warmup_restart`` (the authors' cut tuning) the ISNet phase instead
starts again from the initial weights with a new optimizer and LR schedule. Tracking is done by the
caller through the ``on_epoch`` callback (the stage logs to MLflow).

Exact resume: the epoch permutation, each sample's augmentation and the stochastic heatmap choices
are pure functions of (seed, epoch, step, index); the LR schedule is a function of the global step;
model, optimizer, BN statistics, early-stopping state, C1/C2 and the restart step are in the
checkpoint. A run killed at any point and resumed with the same config ends with the same weights as
an uninterrupted run (on CPU; CUDA kernels are not bitwise deterministic).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from isnetflow.config import TrainConfig
from isnetflow.isnet import (
    ForegroundRangeEstimator,
    ISNetLossConfig,
    explain_batch,
    isnet_objective,
    loss_config_from_settings,
)
from isnetflow.nets import build_model
from isnetflow.training.checkpoint import CheckpointError, CheckpointStore
from isnetflow.training.data import Augmenter, TrainData, _mix, shortcut_free_inputs
from isnetflow.training.distributed import SINGLE, DistContext, distributed_env, process_group, shard

log = logging.getLogger(__name__)

__all__ = [
    "EpochCallback",
    "TrainResult",
    "audit_background_share",
    "predict_proba",
    "resolve_device",
    "train",
]

EpochCallback = Callable[[int, dict[str, float], nn.Module], None]


@dataclass
class TrainResult:
    model: nn.Module  # selected weights (standard: validation AUC; ISNet: train.selection), eval mode
    history: list[dict[str, float]]
    best_epoch: int
    best_val_auc: float
    c1: float | None
    c2: float | None
    global_steps: int
    wall_seconds: float
    device: str
    config: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when available. On CUDA, a torchrun rank uses the GPU of its ``local_rank``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
    if name == "cuda" and local_rank is not None:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities ``(N, classes)`` in eval mode, batched."""
    model.eval()
    device = next(model.parameters()).device
    out = [
        torch.softmax(model(images[i : i + batch_size].to(device)).float(), dim=1).cpu()
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(out).numpy()


def audit_background_share(
    model: nn.Module, images: torch.Tensor, masks: torch.Tensor, targets: torch.Tensor, composite: str
) -> float:
    """Mean share of positive relevance outside the lungs with the evaluation audit's zennit ``composite``.

    The measurement of the background-share promotion gate (:func:`isnetflow.audit.explain.explain`,
    label logit), on validation images: the selection limit is judged with the gate's own yardstick.
    """
    from isnetflow.audit.explain import background_share as share_of
    from isnetflow.audit.explain import explain  # lazy: zennit is only needed here

    model.eval()
    rel = explain(model, images, targets, composite=composite)  # type: ignore[arg-type]
    shares = share_of(rel, masks.numpy())
    return float(np.nanmean(shares)) if np.isfinite(shares).any() else math.nan


def val_heatmap_terms(
    model: nn.Module,
    data: TrainData,
    indices: np.ndarray,
    config: ISNetLossConfig,
    batch_size: int,
    seed: int,
    class_weight: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean ISNet terms over ``indices`` (eval mode, no graph): loss, ce, background and foreground

    Computed by :func:`isnetflow.isnet.isnet_objective`, the same objective the training steps use.
    """
    model.eval()
    device = next(model.parameters()).device
    sums = {"loss": 0.0, "ce": 0.0, "background": 0.0, "foreground": 0.0}
    for i in range(0, indices.size, batch_size):
        idx = indices[i : i + batch_size]
        x, m, y = data.images[idx].to(device), data.masks[idx].to(device), data.labels[idx].to(device)
        gen = torch.Generator().manual_seed(_mix(seed, i, 13))
        with torch.no_grad():
            out = isnet_objective(model, x, y, m, config, generator=gen, class_weight=class_weight)
        for k, v in (("loss", out.loss), ("ce", out.cross_entropy), ("background", out.background),
                     ("foreground", out.foreground)):  # fmt: skip
            sums[k] += float(v) * idx.size
    n = max(1, indices.size)
    return {k: v / n for k, v in sums.items()}


def val_swap_change(
    model: nn.Module, data: TrainData, indices: np.ndarray, proba: np.ndarray, seed: int
) -> float:
    """Mean ``|score(composite) - score(original)|`` over ``indices`` for the counterfactual background swap.

    Each validation image keeps its lungs on the background of a validation image with the other label
    (another site when there is one): :func:`isnetflow.audit.counterfactual.choose_donors` and the
    union-of-masks composite. ``proba`` are the originals' probabilities. A network that reads only the
    lungs scores near 0; a threshold-free twin of the evaluation's flip rate, on internal data only.
    """
    from isnetflow.audit.counterfactual import choose_donors

    if indices.size < 2:
        return float("nan")
    labels = (data.labels.numpy() > 0).astype(int)
    donors = choose_donors(data.sites, labels.tolist(), indices.tolist(), indices.tolist(), seed=seed)
    pairs = [(k, d) for k, d in enumerate(donors) if d is not None]
    if not pairs:
        return float("nan")
    rec = torch.as_tensor(indices[[k for k, _ in pairs]])
    don = torch.as_tensor(np.asarray([d for _, d in pairs], dtype=np.int64))
    region = (data.masks[rec] > 0.5) | (data.masks[don] > 0.5)
    composite = torch.where(region, data.images[rec], data.images[don])
    swapped = predict_proba(model, composite)
    original = proba[[k for k, _ in pairs]]
    return float(np.abs(1.0 - swapped[:, 0] - (1.0 - original[:, 0])).mean())


def isnet_step_gradients(
    model: nn.Module,
    out: Any,
    P: float,
    balance: float | None,
    projection: bool = False,
    ctx: DistContext = SINGLE,
    ramp: float = 1.0,
) -> dict[str, float]:
    """Set ``.grad`` of ``model``'s parameters for one ISNet step; return gradient diagnostics.

    The two parts of ``out.loss = (1 - P) CE + P heatmap`` are differentiated separately. Their sum is the
    gradient of ``out.loss``. With ``projection`` a heatmap part that opposes the cross-entropy part (negative
    dot product) first loses that component (PCGrad); with ``balance`` it is then scaled down so that its
    norm is at most ``balance`` times the cross-entropy part's norm, and finally multiplied by ``ramp`` (the
    heatmap ramp of the first ISNet epochs). Returns both norms (the heatmap norm
    after projection), their cosine (before) and the scale. Under data parallelism (``ctx``) both parts are
    averaged over the ranks first (one all-reduce), so the projection and the cap see the global batch's
    gradients, as one process with the whole batch would.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    raw_ce = torch.autograd.grad((1 - P) * out.cross_entropy, params, retain_graph=True, allow_unused=True)
    raw_hm = torch.autograd.grad(P * out.heatmap, params, allow_unused=True)
    g_ce = [torch.zeros_like(p) if g is None else g for p, g in zip(params, raw_ce, strict=True)]
    g_hm = [torch.zeros_like(p) if g is None else g for p, g in zip(params, raw_hm, strict=True)]
    if ctx.distributed:
        both = ctx.all_reduce_mean(g_ce + g_hm)
        g_ce, g_hm = both[: len(params)], both[len(params) :]

    def norm(gs: list[torch.Tensor]) -> torch.Tensor:
        return torch.sqrt(torch.stack([(g.double() ** 2).sum() for g in gs]).sum())

    n_ce, n_hm = norm(g_ce), norm(g_hm)
    dot = torch.stack([(a.double() * b.double()).sum() for a, b in zip(g_ce, g_hm, strict=True)]).sum()
    cosine = float(dot / (n_ce * n_hm).clamp_min(1e-30))
    if projection and float(dot) < 0:  # PCGrad: drop the part of the heatmap gradient that opposes CE
        coef = (dot / (n_ce**2).clamp_min(1e-30)).float()
        g_hm = [b - coef * a for a, b in zip(g_ce, g_hm, strict=True)]
        n_hm = norm(g_hm)
    scale = 1.0
    if balance is not None and float(n_hm) > balance * float(n_ce):
        scale = balance * float(n_ce) / max(float(n_hm), 1e-30)
    scale *= ramp
    for p, a, b in zip(params, g_ce, g_hm, strict=True):
        p.grad = a + b if scale == 1.0 else a + scale * b
    return {
        "grad_norm_ce": float(n_ce),
        "grad_norm_heatmap": float(n_hm),
        "grad_cosine": cosine,
        "heatmap_grad_scale": scale,
    }


def _range_shares(heatmaps: torch.Tensor, masks: torch.Tensor, c1: float, c2: float) -> tuple[float, float]:
    """Share of maps whose in-mask absolute relevance ``S`` is below ``C1`` and above ``C2``."""
    m = masks[:, None].to(heatmaps.dtype) if masks.dim() == 4 else masks[:, None, None].to(heatmaps.dtype)
    s = (heatmaps.detach().abs() * m).flatten(2).sum(2)
    return float((s < c1).float().mean()), float((s > c2).float().mean())


def _auc(labels: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(labels, proba[:, 1]))
    return float(roc_auc_score(labels, proba, multi_class="ovr", average="macro"))


MAX_FAILED_CHECKPOINTS = 3
"""Transient checkpoint failures in a row after which the training stops (each is logged)."""

SELECTION_PENALTY = 5.0
"""Validation AUC given up per unit of background share or swap change above its selection limit."""


def _selection_score(cfg: TrainConfig, metrics: dict[str, float], isnet_phase: bool) -> float:
    """Lower is better. Never prefers a worse validation AUC among epochs within the background limit."""
    auc = metrics["val_auc"]
    if not isnet_phase:
        score = -auc
    elif cfg.selection == "objective":
        score = metrics["val_isnet_loss"]
    else:
        # A limit whose measurement is missing (audit_samples 0, no donor site) does not apply. Soft limits:
        # each unit above a limit costs SELECTION_PENALTY of validation AUC, so an epoch just over a limit
        # with a far better AUC still wins over a chance-level one inside it. An epoch whose validation
        # AUC is below 0.5 (inverted) ranks below every epoch that is not.
        share = metrics.get("val_background_share", math.nan)
        swap = metrics.get("val_swap_change", math.nan)
        excess = 0.0 if math.isnan(share) else max(0.0, share - cfg.selection_max_background)
        excess += 0.0 if math.isnan(swap) else max(0.0, swap - cfg.selection_max_swap_change)
        score = -auc + SELECTION_PENALTY * excess + (10.0 if auc < 0.5 else 0.0)
    return math.inf if math.isnan(score) else score


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s weights and buffers (a selection candidate)."""
    return copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})


def _update_front(state: dict[str, Any], epoch: int, auc: float, score: float, model: nn.Module) -> None:
    """Add ``epoch`` to ``state["front"]``, the epochs no other epoch beats on both validation AUC and
    selection score (higher AUC, lower score); drop the ones it beats. Only these can be chosen by
    :func:`_choose_from_front`, so only their weights are kept."""
    front: list[dict[str, Any]] = state.setdefault("front", [])
    if any(f["auc"] >= auc and f["score"] <= score for f in front):
        return
    front[:] = [f for f in front if not (auc >= f["auc"] and score <= f["score"])]
    front.append({"epoch": epoch, "auc": auc, "score": score, "state": _weights(model)})


def _choose_from_front(front: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """The epoch with the best selection score among those whose validation AUC is within ``tolerance`` of
    the best validation AUC (the best AUC is always on the front); ties go to the earlier epoch."""
    top = max(f["auc"] for f in front)
    near = [f for f in front if f["auc"] >= top - tolerance]
    return min(near, key=lambda f: (f["score"], f["epoch"]))


def _validate(
    cfg: TrainConfig,
    data: TrainData,
    model: nn.Module,
    val_idx: np.ndarray,
    state: dict[str, Any],
    heat_on: bool,
    loss_config: Callable[[float, float], ISNetLossConfig],
    class_weight: torch.Tensor | None,
) -> dict[str, float]:
    """The end-of-epoch validation metrics (AUC, CE, swap change, audit share, ISNet terms when on)."""
    metrics: dict[str, float] = {}
    proba = predict_proba(model, data.images[val_idx])
    val_labels = data.labels[val_idx].numpy()
    metrics["val_auc"] = _auc(val_labels, proba)
    metrics["val_ce"] = float(
        F.nll_loss(torch.log(torch.from_numpy(proba).clamp_min(1e-12)), torch.from_numpy(val_labels))
    )
    metrics["val_swap_change"] = val_swap_change(model, data, val_idx, proba, cfg.seed)
    if cfg.audit_samples:
        a_idx = val_idx[: cfg.audit_samples]
        metrics["val_background_share"] = audit_background_share(
            model, data.images[a_idx], data.masks[a_idx], data.labels[a_idx], cfg.audit_composite
        )
    if heat_on:
        terms = val_heatmap_terms(
            model, data, val_idx, loss_config(state["c1"], state["c2"]), cfg.batch_size, cfg.seed,
            class_weight=class_weight,
        )  # fmt: skip
        metrics["val_background"], metrics["val_foreground"] = terms["background"], terms["foreground"]
        metrics["val_isnet_loss"] = terms["loss"]
    return metrics


def _end_warmup_on_plateau(cfg: TrainConfig, state: dict[str, Any], epoch: int, val_auc: float) -> None:
    """After warm-up ``epoch``: set ``state["isnet_start"]`` once a ``cfg.warmup_patience`` warm-up ends.

    It ends after ``cfg.warmup_epochs`` at the earliest, once validation AUC has not improved for
    ``warmup_patience`` epochs, and after ``warmup_max_epochs`` (default half the schedule) at the latest.
    """
    if cfg.warmup_patience is None or state["isnet_start"] is not None:
        return
    if math.isfinite(val_auc) and val_auc > state["warmup_best_auc"]:
        state["warmup_best_auc"], state["warmup_bad_epochs"] = val_auc, 0
    else:
        state["warmup_bad_epochs"] += 1
    done = epoch + 1
    longest = cfg.warmup_max_epochs if cfg.warmup_max_epochs is not None else max(1, cfg.epochs // 2)
    if done >= cfg.warmup_epochs and (state["warmup_bad_epochs"] >= cfg.warmup_patience or done >= longest):
        state["isnet_start"] = done
        log.info("warm-up ends after epoch %d (best validation AUC %.3f)", epoch, state["warmup_best_auc"])


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """LR multiplier at optimizer ``step`` of a schedule of ``total`` steps."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        return 0.1 ** (step // max(1, total // 3))
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=False,
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _config_fingerprint(cfg: TrainConfig) -> str:
    d = cfg.model_dump(mode="json", exclude={"epochs", "checkpoint_dir", "checkpoint_every", "num_threads"})
    return json.dumps(d, sort_keys=True)


@contextlib.contextmanager
def torch_runtime(num_threads: int | None, deterministic: bool) -> Iterator[None]:
    """CPU threads and deterministic algorithms for one training, restored afterwards.

    Both are process-global in torch: a training must not leave them changed for whatever runs next in
    the same process (an evaluation, the next test, a notebook cell).
    """
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if num_threads:
            torch.set_num_threads(num_threads)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)


def train(
    cfg: TrainConfig,
    data: TrainData,
    *,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``cfg.model`` on the ``train`` split of ``data``; select on ``val``; return the best model.

    ``cfg.num_threads`` and (on CPU) deterministic algorithms hold for the training only
    (:func:`torch_runtime`). Under torchrun the training is data-parallel
    (:mod:`isnetflow.training.distributed`): ``cfg.batch_size`` is per rank, rank 0 validates, calls
    ``on_epoch`` and writes checkpoints, and every rank returns the same selected model.
    """
    env = distributed_env()
    device = resolve_device(cfg.device, env.local_rank if env.distributed else None)
    threads = cfg.num_threads
    if env.distributed and not threads and device.type == "cpu":  # share the node's cores between its ranks
        threads = max(1, (os.cpu_count() or 1) // env.local_world_size)
    with torch_runtime(threads, deterministic=device.type == "cpu"), process_group(device) as ctx:
        return _train(cfg, data, device, resume=resume, on_epoch=on_epoch, progress=progress, ctx=ctx)


def _train(
    cfg: TrainConfig,
    data: TrainData,
    device: torch.device,
    *,
    resume: bool,
    on_epoch: EpochCallback | None,
    progress: bool,
    ctx: DistContext = SINGLE,
) -> TrainResult:
    t0 = time.perf_counter()
    num_classes = len(data.classes)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=num_classes, in_channels=data.images.shape[1]).to(device)
    opt = _make_optimizer(cfg, model)

    train_idx = data.indices("train")
    val_idx = data.indices("val")
    global_batch = cfg.batch_size * ctx.world_size  # batch_size is per rank
    if train_idx.size < global_batch:
        raise ValueError(
            f"only {train_idx.size} training images for batch size {cfg.batch_size} x {ctx.world_size} ranks"
        )
    if val_idx.size == 0:
        raise ValueError("the validation split is empty: add internal patients or raise val_fraction")
    steps_per_epoch = train_idx.size // global_batch  # drop_last: keeps batch-norm statistics sane
    total_steps = steps_per_epoch * cfg.epochs
    counts = torch.bincount(data.labels[train_idx], minlength=num_classes).float()
    class_weight = (
        (counts.sum() / (num_classes * counts.clamp_min(1))).to(device) if cfg.class_weighting else None
    )
    augment = Augmenter(cfg.augment, cfg.seed)
    hm = cfg.heatmap
    isnet = cfg.mode == "isnet"
    # per-rank random streams (swap donors, stochastic heatmaps); one process keeps its original seeds
    rank_part = (ctx.rank,) if ctx.distributed else ()
    # bf16 autocast only for cross-entropy-only steps (also the ISNet warm-up); the LRP pass is float32
    amp = device.type == "cuda" and cfg.amp in ("auto", "bf16")

    state: dict[str, Any] = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "best_auc": -math.inf,
        "best_score": math.inf,
        "best_epoch": -1,
        "best_state": None,
        "bad_epochs": 0,
        "history": [],
        "c1": hm.C1,
        "c2": hm.C2,
        "stopped": False,
        "schedule_start": 0,  # global step where the LR schedule (re)starts: the warm-up restart
        # first epoch of the ISNet phase; None while a warm-up with cfg.warmup_patience goes on
        "isnet_start": cfg.warmup_epochs if cfg.warmup_patience is None else None,
        "warmup_best_auc": -math.inf,
        "warmup_bad_epochs": 0,
    }
    store = CheckpointStore(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if resume:
        if store is None:
            raise ValueError("--resume needs a checkpoint location (train.checkpoint_dir)")
        ckpt = store.load_latest(map_location=device)
        if ckpt is None:
            log.warning("no checkpoint at %s: starting from scratch", cfg.checkpoint_dir)
        else:
            if ckpt["fingerprint"] != _config_fingerprint(cfg):
                raise ValueError(f"{cfg.checkpoint_dir}: checkpoint was written with a different config")
            written_by = ckpt.get("world_size", 1)
            if written_by != ctx.world_size:  # the global batch would change mid-run
                raise ValueError(
                    f"{cfg.checkpoint_dir}: checkpoint was written by {written_by} process(es); "
                    f"resume it with the same number (now {ctx.world_size})"
                )
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            state = ckpt["state"]
            log.info("resumed at epoch %d step %d", state["epoch"], state["step_in_epoch"])
        ctx.barrier()  # every rank has read the checkpoint before rank 0 may write the next one

    failed_saves = 0

    def save_checkpoint() -> None:
        """Every rank calls this at the same steps, checkpoint location or not: the ranks' batch-norm running
        statistics are averaged here, so that all ranks hold what rank 0 saves and a resume continues
        exactly (a no-op for one process). A checkpoint that cannot be written (:class:`CheckpointError`)
        stops the training when retrying cannot help (permissions, credentials, a missing bucket) or after
        ``MAX_FAILED_CHECKPOINTS`` failures in a row; a transient failure (timeout, connection) is logged
        and the training goes on to the next checkpoint. ``latest`` never points at an incomplete write, so
        the last complete checkpoint stays resumable either way."""
        nonlocal failed_saves
        ctx.average_running_stats(model)
        if store is None or not ctx.is_main:
            return
        try:
            _save()
            failed_saves = 0
        except CheckpointError as exc:
            failed_saves += 1
            if exc.permanent or failed_saves >= MAX_FAILED_CHECKPOINTS:
                raise CheckpointError(
                    f"{exc}; training stopped at step {state['global_step']} ({failed_saves} failed "
                    f"checkpoint(s) in a row): resume from the last complete checkpoint with --resume",
                    permanent=exc.permanent,
                ) from exc
            log.warning("%s: training goes on, the next checkpoint is tried at its step", exc)

    def _save() -> None:
        if store is not None:
            store.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "state": state,
                    "fingerprint": _config_fingerprint(cfg),
                    "world_size": ctx.world_size,
                },
                state["global_step"],
            )

    def loss_config(c1: float, c2: float) -> ISNetLossConfig:
        return loss_config_from_settings(hm, c1, c2)

    def fg_calibration() -> tuple[float, float]:
        """C1/C2 from the relevance mass of the warmed-up standard model (the authors' recipe)."""
        est = ForegroundRangeEstimator(region=hm.fg_region)
        probe = loss_config(1.0, 25.0)  # bounds unused when only explaining
        model.eval()
        for i in range(0, train_idx.size, cfg.batch_size):
            if ctx.distributed and (i // cfg.batch_size) % ctx.world_size != ctx.rank:
                continue  # another rank's share of the batches
            idx = train_idx[i : i + cfg.batch_size]
            x, y = data.images[idx].to(device), data.labels[idx].to(device)
            gen = torch.Generator().manual_seed(_mix(cfg.seed, i, 11))
            _, maps = explain_batch(model, x, y, probe, create_graph=False, generator=gen)
            est.update(maps, data.masks[idx].to(device))
        if ctx.distributed:  # merge the ranks' statistics in rank order: every rank gets the same C1/C2
            merged = ForegroundRangeEstimator(region=hm.fg_region)
            for count, mean, m2 in ctx.all_gather(est.state()):
                merged.merge(count, mean, m2)
            est = merged
        c1, c2 = est.result()
        log.info("foreground range from the warm-up model: C1=%.4g C2=%.4g", c1, c2)
        return c1, c2

    bar_total = (cfg.epochs - state["epoch"]) * steps_per_epoch - state["step_in_epoch"]
    bar = tqdm(
        total=bar_total,
        desc=f"train[{cfg.mode}]" + (f" x{ctx.world_size} ranks" if ctx.distributed else ""),
        unit="step",
        disable=not progress or not ctx.is_main,
        mininterval=1,
    )
    while state["epoch"] < cfg.epochs and not state["stopped"]:
        epoch = state["epoch"]
        # the ISNet phase follows the warm-up; its heatmap term is on unless cfg.relevance_loss is off (the
        # 'swap' comparison arm: the same phases, inputs and selection with cross-entropy only)
        isnet_start = state.get("isnet_start", cfg.warmup_epochs)  # checkpoints before the key: fixed
        isnet_phase = isnet and isnet_start is not None and epoch >= isnet_start
        heat_on = isnet_phase and cfg.relevance_loss
        ramp = min(1.0, (epoch - isnet_start + 1) / hm.ramp_epochs) if heat_on and hm.ramp_epochs else 1.0
        fade = min(1.0, epoch / cfg.background_fade_epochs) if cfg.background_fade_epochs else 1.0
        if heat_on and (state["c1"] is None or state["c2"] is None):
            state["c1"], state["c2"] = fg_calibration()
        restart = isnet_phase and cfg.warmup_restart and epoch == isnet_start > 0
        if restart and state["step_in_epoch"] == 0 and state["schedule_start"] == 0:
            # The warm-up network only measured C1/C2 (the authors discard theirs too): the ISNet starts
            # from the very initial weights, as if the warm-up had not happened, with a new optimizer and
            # LR schedule, so it never learns the background shortcut first.
            torch.manual_seed(cfg.seed)
            fresh = build_model(cfg.model, num_classes=num_classes, in_channels=data.images.shape[1])
            model.load_state_dict(fresh.state_dict())
            opt = _make_optimizer(cfg, model)
            state["schedule_start"] = state["global_step"]
            save_checkpoint()
            log.info("warm-up restart: the ISNet trains from the initial weights from epoch %d", epoch)
        perm = torch.randperm(train_idx.size, generator=torch.Generator().manual_seed(_mix(cfg.seed, epoch)))
        if state["step_in_epoch"] == 0:
            state["epoch_sums"] = {}
        # the epoch's running sums of the step values live in the checkpointed state: a resumed epoch
        # reports the mean over all its steps, not over the steps after the resume
        sums: dict[str, float] = state.setdefault("epoch_sums", {})
        model.train()
        for step in range(state["step_in_epoch"], steps_per_epoch):
            idx = shard(train_idx[perm[step * global_batch : (step + 1) * global_batch].numpy()], ctx)
            x, m = augment(data.images[idx], data.masks[idx], idx.tolist(), epoch)
            x, m, y = x.to(device), m.to(device), data.labels[idx].to(device)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(
                    cfg, state["global_step"] - state["schedule_start"], total_steps - state["schedule_start"]
                )
            opt.zero_grad(set_to_none=True)
            parts: dict[str, float]
            if isnet_phase and cfg.isnet_swap_fraction > 0:
                sgen = torch.Generator().manual_seed(_mix(cfg.seed, state["global_step"], 3, *rank_part))
                n_swap = round(cfg.isnet_swap_fraction * x.shape[0])
                sub = torch.randperm(x.shape[0], generator=sgen)[:n_swap].to(x.device)
                x = x.clone()
                x[sub] = shortcut_free_inputs(x[sub], m[sub], "background_swap", sgen, background_scale=fade)
            if heat_on:
                gen = torch.Generator().manual_seed(_mix(cfg.seed, state["global_step"], 7, *rank_part))
                lcfg = loss_config(state["c1"], state["c2"])
                out = isnet_objective(model, x, y, m, lcfg, generator=gen, class_weight=class_weight)
                loss = out.loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite ISNet loss at epoch {epoch} step {step}")
                parts = isnet_step_gradients(
                    model, out, hm.P, hm.grad_balance, hm.grad_projection, ctx, ramp=ramp
                )
                assert out.heatmaps is not None
                below, above = _range_shares(out.heatmaps, m, lcfg.C1, lcfg.C2)
                parts |= {
                    "ce": float(out.cross_entropy.detach()),
                    "background": float(out.background.detach()),
                    "foreground": float(out.foreground.detach()),
                    "share_below_c1": below,
                    "share_above_c2": above,
                }
            else:
                if isnet and not isnet_phase:  # the ISNet's warm-up: inputs without a background shortcut
                    wgen = torch.Generator().manual_seed(_mix(cfg.seed, state["global_step"], 5, *rank_part))
                    x = shortcut_free_inputs(x, m, cfg.warmup_inputs, wgen, background_scale=fade)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, weight=class_weight)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at epoch {epoch} step {step}")
                loss.backward()
                ctx.average_gradients(model)
                parts = {"ce": float(loss.detach())}
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            values = {"loss": float(loss.detach()), **parts}
            if ctx.distributed:  # the global batch's means: the same on every rank and in rank 0's checkpoint
                avg = ctx.all_reduce_mean([torch.tensor(list(values.values()), dtype=torch.float64)])[0]
                values = dict(zip(values, avg.tolist(), strict=True))
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + v
            state["global_step"] += 1
            state["step_in_epoch"] = step + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.3f}")
            if state["global_step"] % cfg.checkpoint_every == 0:
                save_checkpoint()

        # ---- end of epoch: validation (rank 0), selection, early stopping
        n_steps = max(1, steps_per_epoch)
        ctx.average_running_stats(model)
        if ctx.is_main:
            metrics = {f"train_{k}": v / n_steps for k, v in sums.items()}
            metrics |= _validate(cfg, data, model, val_idx, state, heat_on, loss_config, class_weight)
            metrics["lr"] = opt.param_groups[0]["lr"]
            metrics["heatmap_loss_on"] = float(heat_on)
        metrics = ctx.broadcast(metrics if ctx.is_main else None)
        state["history"].append({"epoch": epoch, **metrics})
        # Selection: the standard model by validation AUC. The ISNet by validation AUC among the epochs
        # whose validation background share is within the limit (else by its share), or by its validation
        # objective (selection="objective"); warm-up epochs are never selected.
        eligible = not isnet or isnet_phase
        score = _selection_score(cfg, metrics, isnet_phase)
        if eligible and cfg.selection_auc_tolerance is not None and math.isfinite(metrics["val_auc"]):
            _update_front(state, epoch, metrics["val_auc"], score, model)
        if eligible and score < state["best_score"]:
            state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch, 0
            state["best_auc"] = metrics["val_auc"]
            state["best_state"] = _weights(model)
        elif eligible:
            state["bad_epochs"] += 1
            if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
                state["stopped"] = True
                log.info("early stopping after epoch %d (best %d)", epoch, state["best_epoch"])
        if isnet and not isnet_phase:  # a warm-up with cfg.warmup_patience ends when its AUC stops rising
            _end_warmup_on_plateau(cfg, state, epoch, metrics["val_auc"])
        state["epoch"] = epoch + 1
        state["step_in_epoch"] = 0
        save_checkpoint()
        if on_epoch is not None and ctx.is_main:
            on_epoch(epoch, metrics, model)
    bar.close()

    if cfg.selection_auc_tolerance is not None and state.get("front"):
        chosen = _choose_from_front(state["front"], cfg.selection_auc_tolerance)
        state["best_epoch"], state["best_auc"] = chosen["epoch"], chosen["auc"]
        state["best_state"] = chosen["state"]
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    return TrainResult(
        model=model,
        history=state["history"],
        best_epoch=state["best_epoch"],
        best_val_auc=float(state["best_auc"]),
        c1=state["c1"],
        c2=state["c2"],
        global_steps=state["global_step"],
        wall_seconds=round(time.perf_counter() - t0, 2),
        device=str(device),
        config=cfg.model_dump(mode="json"),
    )
