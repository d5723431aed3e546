"""One rank of the data-parallel equivalence test (run by torchrun, or alone as the 1-process reference).

``python ddp_worker.py OUT MODE BATCH EPOCHS [DEVICE]``: trains a tiny synthetic cohort with
``isnetflow.training.train`` and, on rank 0, writes the final weights, optimizer state and per-epoch
train loss to ``OUT``.

The network is a plain convolution stack without batch norm (registered here, for the test only): with
per-rank batch statistics, 2 ranks x batch b normalize over b samples where 1 process x batch 2b normalizes
over 2b, so only a network without batch norm makes the two runs equal in exact arithmetic. The heatmap
variant is the deterministic "selective" one, the warm-up and the ISNet phase see raw images and classes
are not weighted: a background swap pairs images inside a rank's batch, and a class-weighted mean over a
rank's batch is not the mean over the global batch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from isnetflow.config import SynthConfig, TrainConfig
from isnetflow.nets import NETS
from isnetflow.training import train
from isnetflow.training.checkpoint import CheckpointStore
from isnetflow.training.data import from_synthetic


def _plain_cnn(num_classes: int, in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, num_classes),
    )  # fmt: skip


def main(out: Path, mode: str, batch: int, epochs: int, device: str = "cpu") -> None:
    NETS["plain-cnn-test"] = _plain_cnn
    data = from_synthetic(SynthConfig(n=40, size=64, seed=3, workers=1), 32, val_fraction=0.25, seed=0)
    cfg = TrainConfig(
        mode=mode,  # type: ignore[arg-type]
        model="plain-cnn-test",
        image_size=32,
        batch_size=batch,
        epochs=epochs,
        warmup_epochs=1,
        warmup_inputs="raw",
        isnet_swap_fraction=0.0,
        class_weighting=False,
        audit_samples=0,
        num_threads=1,
        device=device,  # type: ignore[arg-type]
        checkpoint_every=1000,
        checkpoint_dir=str(out / "ck"),
    )
    result = train(cfg, data, progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        final = CheckpointStore(out / "ck").load_latest()
        assert final is not None
        torch.save({"model": final["model"], "optimizer": final["optimizer"]}, out / "final.pt")
        losses = [h["train_loss"] for h in result.history]
        (out / "history.json").write_text(json.dumps({"train_loss": losses, "steps": result.global_steps}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *sys.argv[5:6])
