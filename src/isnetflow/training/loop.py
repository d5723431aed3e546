"""The training loop shared by the ISNet and the standard baseline: ``train(cfg, data)``.

The recipe, as the loop runs it (:func:`train`):

1. Build the network from ``cfg.seed``; restore model, optimizer and :class:`TrainState` from the latest
   checkpoint with ``resume``.
2. Every epoch has a phase (:mod:`isnetflow.training.phases`). The ISNet's **warm-up** trains cross-entropy
   on shortcut-free inputs (:class:`~isnetflow.training.steps.WarmupStep`); then the **ISNet phase**
   (:class:`~isnetflow.training.steps.ISNetStep`) trains the objective of :mod:`isnetflow.isnet` on
   batches of which ``train.isnet_swap_fraction`` are background-swapped, with the heatmap gradient capped
   at ``heatmap.grad_balance`` times the cross-entropy gradient. Automatic C1/C2 come from the warm-up
   model's heatmaps (:func:`calibrate_foreground_range`); the authors' ``warmup_restart`` then starts again
   from the initial weights. The standard model trains cross-entropy throughout
   (:class:`~isnetflow.training.steps.StandardStep`).
3. After every epoch: validation (:mod:`isnetflow.training.validation`), then selection and early stopping
   (:class:`~isnetflow.training.selection.Selector`); a checkpoint every ``cfg.checkpoint_every`` optimizer
   steps and at the end of every epoch.
4. Return the selected weights. Tracking is the caller's, through the ``on_epoch`` callback.

Exact resume: the batch order, each sample's augmentation and every random choice of a step are pure
functions of (seed, epoch, step, index) (:mod:`isnetflow.training.streams`); the LR schedule is a function
of the global step; model, optimizer, BN statistics and the :class:`TrainState` (selection, early
stopping, C1/C2, phase boundaries) are in the checkpoint. A run killed at any point and resumed with the
same config ends with the same weights as an uninterrupted run (on CPU; CUDA kernels are not bitwise
deterministic).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from isnetflow.artifacts.training import learning_milestones
from isnetflow.config import DistillConfig, TrainConfig
from isnetflow.isnet import (
    ForegroundRangeEstimator,
    ISNetLossConfig,
    explain_batch,
    loss_config_from_settings,
)
from isnetflow.nets import MIDDLE_LAYERS, build_model
from isnetflow.training.checkpoint import CheckpointError, CheckpointStore
from isnetflow.training.data import Augmenter, TrainData
from isnetflow.training.distill import Distiller
from isnetflow.training.distributed import SINGLE, DistContext, distributed_env, process_group, shard
from isnetflow.training.phases import Phase, audits_background, end_warmup_on_plateau, phase_of
from isnetflow.training.selection import Selector
from isnetflow.training.state import TrainState
from isnetflow.training.steps import ISNetStep, StandardStep, TeacherStep, TrainStep, WarmupStep
from isnetflow.training.streams import RandomStreams
from isnetflow.training.validation import validate_epoch

log = logging.getLogger(__name__)

__all__ = [
    "EpochCallback",
    "TrainResult",
    "calibrate_foreground_range",
    "resolve_device",
    "train",
    "train_teacher",
]

EpochCallback = Callable[[int, dict[str, float], nn.Module], None]

MAX_FAILED_CHECKPOINTS = 3
"""Transient checkpoint failures in a row after which the training stops (each is logged)."""


@dataclass
class TrainResult:
    """What a training returns: the selected model (eval mode) and its record."""

    model: nn.Module
    """The selected weights (standard: validation AUC; ISNet: ``train.selection``), in eval mode."""
    history: list[dict[str, float]]
    best_epoch: int
    best_val_auc: float
    c1: float | None
    c2: float | None
    global_steps: int
    wall_seconds: float
    device: str
    config: dict[str, Any] = field(default_factory=dict)
    isnet_start: int | None = None
    """The ISNet phase's first epoch (the warm-up's length); ``None`` for a standard training."""

    def milestones(self) -> dict[str, Any]:
        """When the training learned: ``ce_below_half_epoch`` and ``learned_early``
        (:func:`isnetflow.artifacts.training.learning_milestones`)."""
        epochs = int(self.config.get("epochs") or len(self.history))  # the schedule's, not the epochs run
        return learning_milestones([h.get("train_ce") for h in self.history], self.isnet_start, epochs)


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


def _lr_factor(cfg: TrainConfig, step: int, total: int, warmup_steps: int = 0) -> float:
    """LR multiplier at optimizer ``step`` of a schedule of ``total`` steps, times a linear ramp from
    ``1 / warmup_steps`` to 1 over the first ``warmup_steps`` steps."""
    ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if cfg.schedule == "constant":
        return ramp
    if cfg.schedule == "step":
        return ramp * 0.1 ** (step // max(1, total // 3))
    return ramp * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(1, total)))


def _make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``model``'s parameters."""
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
    """The settings a checkpoint must be resumed with (the schedule's length and the checkpoint place may
    change)."""
    d = cfg.model_dump(mode="json", exclude={"epochs", "checkpoint_dir", "checkpoint_every", "num_threads"})
    return json.dumps(d, sort_keys=True)


def _same_settings(written: str, fingerprint: str) -> bool:
    """Whether a checkpoint's fingerprint ``written`` names the settings of ``fingerprint``, also when it
    was written with the settings' older key names (``audit_composite``): read back through
    :class:`TrainConfig`, which still accepts them."""
    if written == fingerprint:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return _config_fingerprint(TrainConfig.model_validate(json.loads(written))) == fingerprint
    except (ValueError, TypeError):
        return False


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


class Checkpointer:
    """Writes and reads a training's checkpoints (``train.checkpoint_dir``; none without one).

    Every rank calls :meth:`save` at the same steps, checkpoint location or not: the ranks' batch-norm
    running statistics are averaged there, so that all ranks hold what rank 0 saves and a resume continues
    exactly (a no-op for one process). A checkpoint that cannot be written (:class:`CheckpointError`) stops
    the training when retrying cannot help (permissions, credentials, a missing bucket) or after
    ``MAX_FAILED_CHECKPOINTS`` failures in a row; a transient failure (timeout, connection) is logged and
    the training goes on to the next checkpoint. ``latest`` never points at an incomplete write, so the last
    complete checkpoint stays resumable either way.
    """

    def __init__(self, cfg: TrainConfig, ctx: DistContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.store = CheckpointStore(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        self.fingerprint = _config_fingerprint(cfg)
        self.failed = 0

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, state: TrainState) -> None:
        """Average the ranks' BN statistics; rank 0 writes model, optimizer and state."""
        self.ctx.average_running_stats(model)
        if self.store is None or not self.ctx.is_main:
            return
        try:
            self.store.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "state": state.as_checkpoint(),
                    "fingerprint": self.fingerprint,
                    "world_size": self.ctx.world_size,
                },
                state.global_step,
            )
            self.failed = 0
        except CheckpointError as exc:
            self.failed += 1
            if exc.permanent or self.failed >= MAX_FAILED_CHECKPOINTS:
                raise CheckpointError(
                    f"{exc}; training stopped at step {state.global_step} ({self.failed} failed "
                    f"checkpoint(s) in a row): resume from the last complete checkpoint with --resume",
                    permanent=exc.permanent,
                ) from exc
            log.warning("%s: training goes on, the next checkpoint is tried at its step", exc)

    def resume(self, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device) -> TrainState | None:
        """Load the latest checkpoint into ``model`` and ``opt``; return its state (``None``: none yet)."""
        if self.store is None:
            raise ValueError("--resume needs a checkpoint location (train.checkpoint_dir)")
        ckpt = self.store.load_latest(map_location=device)
        state = None
        if ckpt is None:
            log.warning("no checkpoint at %s: starting from scratch", self.cfg.checkpoint_dir)
        else:
            if not _same_settings(ckpt["fingerprint"], self.fingerprint):
                raise ValueError(f"{self.cfg.checkpoint_dir}: checkpoint was written with a different config")
            written_by = ckpt.get("world_size", 1)
            if written_by != self.ctx.world_size:  # the global batch would change mid-run
                raise ValueError(
                    f"{self.cfg.checkpoint_dir}: checkpoint was written by {written_by} process(es); "
                    f"resume it with the same number (now {self.ctx.world_size})"
                )
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            state = TrainState.from_checkpoint(ckpt["state"], self.cfg)
            log.info("resumed at epoch %d step %d", state.epoch, state.step_in_epoch)
        self.ctx.barrier()  # every rank has read the checkpoint before rank 0 may write the next one
        return state


def calibrate_foreground_range(
    cfg: TrainConfig,
    model: nn.Module,
    data: TrainData,
    train_idx: np.ndarray,
    device: torch.device,
    streams: RandomStreams,
    ctx: DistContext = SINGLE,
) -> tuple[float, float]:
    """C1/C2 from the relevance mass of the warmed-up standard model (the authors' recipe).

    Heatmaps of the objective's variant over the training split (stream ``calibration``); under data
    parallelism each rank explains its share of the batches and the statistics are merged in rank order, so
    every rank gets the same C1/C2.
    """
    hm = cfg.heatmap
    est = ForegroundRangeEstimator(region=hm.fg_region)
    probe = loss_config_from_settings(hm, 1.0, 25.0)  # bounds unused when only explaining
    model.eval()
    for i in range(0, train_idx.size, cfg.batch_size):
        if ctx.distributed and (i // cfg.batch_size) % ctx.world_size != ctx.rank:
            continue  # another rank's share of the batches
        idx = train_idx[i : i + cfg.batch_size]
        x, y = data.images[idx].to(device), data.labels[idx].to(device)
        _, maps = explain_batch(
            model, x, y, probe, create_graph=False, generator=streams.generator("calibration", i)
        )
        est.update(maps, data.masks[idx].to(device))
    if ctx.distributed:
        merged = ForegroundRangeEstimator(region=hm.fg_region)
        for count, mean, m2 in ctx.all_gather(est.state()):
            merged.merge(count, mean, m2)
        est = merged
    c1, c2 = est.result()
    log.info("foreground range from the warm-up model: C1=%.4g C2=%.4g", c1, c2)
    return c1, c2


def train_teacher(
    cfg: TrainConfig, data: TrainData, device: torch.device, *, progress: bool, ctx: DistContext = SINGLE
) -> nn.Module:
    """The lungs-only teacher of ``train.distill``: the same network, cross-entropy on lung-masked images
    for ``distill.epochs_for(cfg.epochs)`` epochs, selected by validation AUC (no checkpoints: a resumed run
    trains it again, to the same weights on CPU)."""
    teacher_cfg = cfg.model_copy(
        update={
            "mode": "standard", "epochs": cfg.distill.epochs_for(cfg.epochs),
            "distill": DistillConfig(teacher_epochs=0),
            "checkpoint_dir": None, "patience": None, "audit_samples": 0,
        }
    )  # fmt: skip
    share = cfg.distill.context_share or None  # raw images in: the teacher's step builds its inputs
    inputs = data if share else dataclasses.replace(data, images=data.images * data.masks)
    result = _train(
        teacher_cfg, inputs, device, resume=False, on_epoch=None, progress=progress, ctx=ctx, context=share
    )
    log.info("lungs-only teacher: validation AUC %.3f at epoch %d", result.best_val_auc, result.best_epoch)
    return result.model


def _map_layer(cfg: TrainConfig) -> str | None:
    """The spatial distillation's layer: ``distill.map_layer``, else the net's middle feature map, else (a
    net registered without one) ``None``, the last feature map."""
    if cfg.distill.map_layer is not None:
        return cfg.distill.map_layer
    layer = MIDDLE_LAYERS.get(cfg.model)
    if layer is None and cfg.distill.map_weight > 0:
        log.info("net %r has no entry in isnetflow.nets.MIDDLE_LAYERS: its last map is distilled", cfg.model)
    return layer


def _train(
    cfg: TrainConfig,
    data: TrainData,
    device: torch.device,
    *,
    resume: bool,
    on_epoch: EpochCallback | None,
    progress: bool,
    ctx: DistContext = SINGLE,
    context: float | None = None,
) -> TrainResult:
    """``context``: the lungs-only teacher with context (:class:`TeacherStep`, ``distill.context_share``):
    ``data`` holds the raw images, the steps build the teacher's inputs and the validation sees the lungs
    alone."""
    t0 = time.perf_counter()
    num_classes = len(data.classes)
    if cfg.mode == "isnet":  # an unknown heatmap variant fails now, not after the warm-up
        loss_config_from_settings(cfg.heatmap, 1.0, 25.0)
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
    streams = RandomStreams(cfg.seed, ctx.rank if ctx.distributed else None)
    # bf16 autocast only for cross-entropy-only steps (also the ISNet warm-up); the LRP pass is float32
    amp = device.type == "cuda" and cfg.amp in ("auto", "bf16")
    distiller = None
    lr_warmup_steps = 0
    if cfg.mode == "isnet" and cfg.distill.epochs_for(cfg.epochs) > 0:
        teacher = train_teacher(cfg, data, device, progress=progress, ctx=ctx)
        distiller = Distiller(
            teacher, cfg.distill.weight, cfg.distill.target, cfg.distill.temperature,
            map_weight=cfg.distill.map_weight, map_layer=_map_layer(cfg), map_region=cfg.distill.map_region,
            all_reduce_mean=ctx.all_reduce_mean if ctx.distributed else None,
        )  # fmt: skip
        if cfg.distill.init_from_teacher:
            model.load_state_dict(teacher.state_dict())
            lr_warmup_steps = cfg.distill.lr_warmup_epochs * steps_per_epoch
    standard = StandardStep(model, ctx, class_weight, amp, device, distiller)
    teacher_step = TeacherStep(standard, context, streams) if context is not None else None
    val_data = data if context is None else dataclasses.replace(data, images=data.images * data.masks)
    selector = Selector(cfg)

    state = TrainState.start(cfg)
    checkpoints = Checkpointer(cfg, ctx)
    if resume:
        state = checkpoints.resume(model, opt, device) or state

    def objective_of(phase: Phase) -> ISNetLossConfig | None:
        """The epoch's ISNet objective (``None`` while the heatmap loss is off)."""
        if not phase.heat_on:
            return None
        assert state.c1 is not None and state.c2 is not None  # set by the calibration
        return loss_config_from_settings(cfg.heatmap, state.c1, state.c2)

    def step_of(phase: Phase) -> TrainStep:
        if phase.name == "standard":
            return standard if teacher_step is None else teacher_step
        if phase.name == "warmup":
            return WarmupStep(standard, cfg, streams, fade=phase.fade)
        return ISNetStep(standard, cfg, streams, objective_of(phase), ramp=phase.ramp, fade=phase.fade)

    bar_total = (cfg.epochs - state.epoch) * steps_per_epoch - state.step_in_epoch
    bar = tqdm(
        total=bar_total,
        desc=f"train[{cfg.mode}]" + (f" x{ctx.world_size} ranks" if ctx.distributed else ""),
        unit="step",
        disable=not progress or not ctx.is_main,
        mininterval=1,
    )
    while state.epoch < cfg.epochs and not state.stopped:
        epoch = state.epoch
        phase = phase_of(cfg, state, epoch)
        if phase.heat_on and (state.c1 is None or state.c2 is None):
            state.c1, state.c2 = calibrate_foreground_range(cfg, model, data, train_idx, device, streams, ctx)
        if phase.restart and state.step_in_epoch == 0 and state.schedule_start == 0:
            # The warm-up network only measured C1/C2 (the authors discard theirs too): the ISNet starts
            # from the very initial weights, as if the warm-up had not happened, with a new optimizer and
            # LR schedule, so it never learns the background shortcut first.
            torch.manual_seed(cfg.seed)
            fresh = build_model(cfg.model, num_classes=num_classes, in_channels=data.images.shape[1])
            model.load_state_dict(fresh.state_dict())
            opt = _make_optimizer(cfg, model)
            state.schedule_start = state.global_step
            checkpoints.save(model, opt, state)
            log.info("warm-up restart: the ISNet trains from the initial weights from epoch %d", epoch)
        step_fn = step_of(phase)
        perm = torch.randperm(train_idx.size, generator=streams.epoch_order(epoch))
        if state.step_in_epoch == 0:
            state.epoch_sums = {}
        sums = state.epoch_sums
        model.train()
        for step in range(state.step_in_epoch, steps_per_epoch):
            idx = shard(train_idx[perm[step * global_batch : (step + 1) * global_batch].numpy()], ctx)
            x, m = augment(data.images[idx], data.masks[idx], idx.tolist(), epoch)
            x, m, y = x.to(device), m.to(device), data.labels[idx].to(device)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * _lr_factor(
                    cfg,
                    state.global_step - state.schedule_start,
                    total_steps - state.schedule_start,
                    lr_warmup_steps if state.schedule_start == 0 else 0,
                )
            opt.zero_grad(set_to_none=True)
            try:
                values = step_fn(x, m, y, state.global_step)
            except FloatingPointError as exc:
                raise FloatingPointError(f"{exc} at epoch {epoch} step {step}") from exc
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            local_loss = values["loss"]
            if ctx.distributed:  # the global batch's means: the same on every rank and in rank 0's checkpoint
                avg = ctx.all_reduce_mean([torch.tensor(list(values.values()), dtype=torch.float64)])[0]
                values = dict(zip(values, avg.tolist(), strict=True))
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + v
            state.global_step += 1
            state.step_in_epoch = step + 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{local_loss:.3f}")
            if state.global_step % cfg.checkpoint_every == 0:
                checkpoints.save(model, opt, state)

        # ---- end of epoch: validation (rank 0), selection, early stopping, the warm-up's end
        n_steps = max(1, steps_per_epoch)
        ctx.average_running_stats(model)
        if ctx.is_main:
            metrics = {f"train_{k}": v / n_steps for k, v in sums.items()}
            audit = audits_background(cfg, phase, epoch)
            loss_config = objective_of(phase)
            metrics |= validate_epoch(cfg, val_data, model, val_idx, loss_config, class_weight, audit=audit)
            metrics["lr"] = opt.param_groups[0]["lr"]
            metrics["heatmap_loss_on"] = float(phase.heat_on)
        metrics = ctx.broadcast(metrics if ctx.is_main else None)
        state.history.append({"epoch": epoch, **metrics})
        selector.observe(state, epoch, metrics, phase.selectable, phase.name == "isnet", model)
        if phase.name == "warmup":
            end_warmup_on_plateau(cfg, state, epoch, metrics["val_auc"])
        state.epoch = epoch + 1
        state.step_in_epoch = 0
        checkpoints.save(model, opt, state)
        if on_epoch is not None and ctx.is_main:
            on_epoch(epoch, metrics, model)
    bar.close()

    selector.finish(state, model)
    model.eval()
    return TrainResult(
        model=model,
        history=state.history,
        best_epoch=state.best_epoch,
        best_val_auc=float(state.best_auc),
        c1=state.c1,
        c2=state.c2,
        global_steps=state.global_step,
        wall_seconds=round(time.perf_counter() - t0, 2),
        device=str(device),
        config=cfg.model_dump(mode="json"),
        isnet_start=state.isnet_start if cfg.mode == "isnet" else None,
    )
