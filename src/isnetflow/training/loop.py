"""The training loop shared by the ISNet and the standard baseline.

``train(cfg, data)`` is a plain function: it builds the network, runs the schedule, evaluates every
epoch on the internal validation split, checkpoints every ``cfg.checkpoint_every`` optimizer steps and
returns the best model. An ISNet first trains ``cfg.warmup_epochs`` of plain cross-entropy, whose
heatmaps set the foreground range C1/C2; with ``cfg.warmup_restart`` (default, as in the authors' code)
the ISNet phase then starts again from the initial weights with a new optimizer and LR schedule,
otherwise it continues from the warmed-up weights. Tracking is done by the caller
through the ``on_epoch`` callback (the stage logs to MLflow).

Exact resume: the epoch permutation, each sample's augmentation and the stochastic heatmap choices
are pure functions of (seed, epoch, step, index); the LR schedule is a function of the global step;
model, optimizer, BN statistics, early-stopping state, C1/C2 and the restart step are in the
checkpoint. A run killed at any point and resumed with the same config ends with the same weights as
an uninterrupted run (on CPU; CUDA kernels are not bitwise deterministic).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from isnetflow.config import TrainConfig
from isnetflow.isnet import ForegroundRangeEstimator, ISNetLossConfig, explain_batch, isnet_objective
from isnetflow.lrp import relevance
from isnetflow.nets import build_model
from isnetflow.training.checkpoint import CheckpointStore
from isnetflow.training.data import Augmenter, TrainData, _mix

log = logging.getLogger(__name__)

__all__ = ["EpochCallback", "TrainResult", "background_share", "predict_proba", "resolve_device", "train"]

EpochCallback = Callable[[int, dict[str, float], nn.Module], None]


@dataclass
class TrainResult:
    model: nn.Module  # best weights (validation AUC; ISNet: validation ISNet objective), eval mode
    history: list[dict[str, float]]
    best_epoch: int
    best_val_auc: float
    c1: float | None
    c2: float | None
    global_steps: int
    wall_seconds: float
    device: str
    config: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available")
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


def background_share(
    model: nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    targets: torch.Tensor,
    *,
    epsilon: float = 0.01,
    batch_size: int = 16,
) -> np.ndarray:
    """Per image: share of positive LRP relevance (for ``targets``) that falls outside the lung mask."""
    model.eval()
    device = next(model.parameters()).device
    shares = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(device)
        m = masks[i : i + batch_size].to(device)
        r = relevance(model, x, targets[i : i + batch_size].to(device), epsilon=epsilon).clamp_min(0)
        total = r.flatten(1).sum(1).clamp_min(1e-12)
        shares.append(((r * (1 - m)).flatten(1).sum(1) / total).cpu())
    return torch.cat(shares).numpy() if shares else np.zeros(0)


def val_heatmap_terms(
    model: nn.Module,
    data: TrainData,
    indices: np.ndarray,
    config: ISNetLossConfig,
    batch_size: int,
    seed: int,
) -> tuple[float, float]:
    """Mean background and foreground ISNet terms over ``indices`` (eval mode, no graph)."""
    model.eval()
    device = next(model.parameters()).device
    bg = fg = 0.0
    for i in range(0, indices.size, batch_size):
        idx = indices[i : i + batch_size]
        x, m, y = data.images[idx].to(device), data.masks[idx].to(device), data.labels[idx].to(device)
        gen = torch.Generator().manual_seed(_mix(seed, i, 13))
        with torch.no_grad():
            out = isnet_objective(model, x, y, m, config, generator=gen)
        bg += float(out.background) * idx.size
        fg += float(out.foreground) * idx.size
    n = max(1, indices.size)
    return bg / n, fg / n


def _auc(labels: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(labels, proba[:, 1]))
    return float(roc_auc_score(labels, proba, multi_class="ovr", average="macro"))


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


def train(
    cfg: TrainConfig,
    data: TrainData,
    *,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``cfg.model`` on the ``train`` split of ``data``; select on ``val``; return the best model."""
    t0 = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    num_classes = len(data.classes)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=num_classes, in_channels=data.images.shape[1]).to(device)
    opt = _make_optimizer(cfg, model)

    train_idx = data.indices("train")
    val_idx = data.indices("val")
    if train_idx.size < cfg.batch_size:
        raise ValueError(f"only {train_idx.size} training images for batch size {cfg.batch_size}")
    if val_idx.size == 0:
        raise ValueError("the validation split is empty: add internal patients or raise val_fraction")
    steps_per_epoch = train_idx.size // cfg.batch_size  # drop_last: keeps batch-norm statistics sane
    total_steps = steps_per_epoch * cfg.epochs
    counts = torch.bincount(data.labels[train_idx], minlength=num_classes).float()
    class_weight = (
        (counts.sum() / (num_classes * counts.clamp_min(1))).to(device) if cfg.class_weighting else None
    )
    augment = Augmenter(cfg.augment, cfg.seed)
    hm = cfg.heatmap
    isnet = cfg.mode == "isnet"
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
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            state = ckpt["state"]
            log.info("resumed at epoch %d step %d", state["epoch"], state["step_in_epoch"])

    def save_checkpoint() -> None:
        if store is not None:
            store.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "state": state,
                    "fingerprint": _config_fingerprint(cfg),
                },
                state["global_step"],
            )

    def loss_config(c1: float, c2: float) -> ISNetLossConfig:
        return ISNetLossConfig(
            P=hm.P, A=hm.A, B=hm.B, E=hm.E, d=hm.d, C1=c1, C2=c2, variant=hm.variant,
            epsilon=hm.epsilon, first_layer=hm.first_layer,
        )  # fmt: skip

    def fg_calibration() -> tuple[float, float]:
        """C1/C2 from the relevance mass of the warmed-up standard model (the authors' recipe)."""
        est = ForegroundRangeEstimator(region=hm.fg_region)
        probe = loss_config(1.0, 25.0)  # bounds unused when only explaining
        model.eval()
        for i in range(0, train_idx.size, cfg.batch_size):
            idx = train_idx[i : i + cfg.batch_size]
            x, y = data.images[idx].to(device), data.labels[idx].to(device)
            gen = torch.Generator().manual_seed(_mix(cfg.seed, i, 11))
            _, maps = explain_batch(model, x, y, probe, create_graph=False, generator=gen)
            est.update(maps, data.masks[idx].to(device))
        c1, c2 = est.result()
        log.info("foreground range from the warm-up model: C1=%.4g C2=%.4g", c1, c2)
        return c1, c2

    bar_total = (cfg.epochs - state["epoch"]) * steps_per_epoch - state["step_in_epoch"]
    bar = tqdm(total=bar_total, desc=f"train[{cfg.mode}]", unit="step", disable=not progress, mininterval=1)
    while state["epoch"] < cfg.epochs and not state["stopped"]:
        epoch = state["epoch"]
        heat_on = isnet and epoch >= cfg.warmup_epochs
        if heat_on and (state["c1"] is None or state["c2"] is None):
            state["c1"], state["c2"] = fg_calibration()
        restart = heat_on and cfg.warmup_restart and epoch == cfg.warmup_epochs > 0
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
        sums: dict[str, float] = {}
        model.train()
        for step in range(state["step_in_epoch"], steps_per_epoch):
            idx = train_idx[perm[step * cfg.batch_size : (step + 1) * cfg.batch_size].numpy()]
            x, m = augment(data.images[idx], data.masks[idx], idx.tolist(), epoch)
            x, m, y = x.to(device), m.to(device), data.labels[idx].to(device)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(
                    cfg, state["global_step"] - state["schedule_start"], total_steps - state["schedule_start"]
                )
            opt.zero_grad(set_to_none=True)
            parts: dict[str, torch.Tensor]
            if heat_on:
                gen = torch.Generator().manual_seed(_mix(cfg.seed, state["global_step"], 7))
                out = isnet_objective(model, x, y, m, loss_config(state["c1"], state["c2"]), generator=gen)
                ce = F.cross_entropy(out.logits, y, weight=class_weight)
                loss = (1 - hm.P) * ce + hm.P * (hm.A * out.background + hm.B * out.foreground)
                parts = {"ce": ce, "background": out.background, "foreground": out.foreground}
            else:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x)
                ce = F.cross_entropy(logits.float(), y, weight=class_weight)
                loss, parts = ce, {"ce": ce}
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {step}: {parts}")
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            state["global_step"] += 1
            state["step_in_epoch"] = step + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.3f}")
            if state["global_step"] % cfg.checkpoint_every == 0:
                save_checkpoint()

        # ---- end of epoch: validation, selection, early stopping
        n_steps = max(1, steps_per_epoch)
        metrics = {f"train_{k}": v / n_steps for k, v in sums.items()}
        proba = predict_proba(model, data.images[val_idx])
        val_labels = data.labels[val_idx].numpy()
        metrics["val_auc"] = _auc(val_labels, proba)
        metrics["val_ce"] = float(
            F.nll_loss(torch.log(torch.from_numpy(proba).clamp_min(1e-12)), torch.from_numpy(val_labels))
        )
        if cfg.audit_samples:
            a_idx = val_idx[: cfg.audit_samples]
            share = background_share(
                model, data.images[a_idx], data.masks[a_idx], data.labels[a_idx], epsilon=hm.epsilon
            )
            metrics["val_background_share"] = float(share.mean())
        if heat_on:
            bg, fg = val_heatmap_terms(
                model, data, val_idx, loss_config(state["c1"], state["c2"]), cfg.batch_size, cfg.seed
            )
            metrics["val_background"], metrics["val_foreground"] = bg, fg
            metrics["val_isnet_loss"] = (1 - hm.P) * metrics["val_ce"] + hm.P * (hm.A * bg + hm.B * fg)
        metrics["lr"] = opt.param_groups[0]["lr"]
        metrics["heatmap_loss_on"] = float(heat_on)
        state["history"].append({"epoch": epoch, **metrics})
        # Selection: the standard model by validation AUC; the ISNet by its validation objective (CE plus
        # the heatmap terms), so that a model which regains accuracy through the background is not chosen.
        eligible = not isnet or heat_on
        score = metrics["val_isnet_loss"] if heat_on else -metrics["val_auc"]
        if math.isnan(score):
            score = math.inf
        if eligible and score < state["best_score"]:
            state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch, 0
            state["best_auc"] = metrics["val_auc"]
            state["best_state"] = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        elif eligible:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= cfg.patience:
                state["stopped"] = True
                log.info("early stopping after epoch %d (best %d)", epoch, state["best_epoch"])
        state["epoch"] = epoch + 1
        state["step_in_epoch"] = 0
        save_checkpoint()
        if on_epoch is not None:
            on_epoch(epoch, metrics, model)
    bar.close()

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
