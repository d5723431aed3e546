"""The validation audit's cadence (``train.audit_every``): where the selection does not read the background
share (the standard model, an ISNet's warm-up) it is measured every few epochs and at the last, and nothing
else the training computes changes, the chosen weights included."""

from __future__ import annotations

import math

import torch

from isnetflow.config import TrainConfig
from isnetflow.training import TrainData, train


def _data(n: int = 24, size: int = 32) -> TrainData:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 1, size, size)
    masks[:, :, 8:24, 6:14] = 1
    masks[:, :, 8:24, 18:26] = 1
    labels = torch.arange(n) % 2
    images[labels == 1, :, 12:20, 8:12] += 0.5  # a lesion inside the lungs, so the AUC moves
    splits = ["train"] * 16 + ["val"] * 8
    sites = ["A", "A", "B", "B"] * (n // 4)  # both labels at both sites: the swap change has donors
    return TrainData(images, masks, labels, ["normal", "covid"], [f"p{i}" for i in range(n)], sites, splits)


def _cfg(**update: object) -> TrainConfig:
    base = dict(
        model="cnn-small", image_size=32, batch_size=8, epochs=7, warmup_epochs=2, audit_samples=4,
        num_threads=1, device="cpu", augment={"prob": 0.0, "noise_std": 0.0}, heatmap={"C1": 0.5, "C2": 4.0},
    )  # fmt: skip
    return TrainConfig.model_validate(base | update)


def _audited(history: list[dict[str, float]]) -> list[int]:
    return [int(h["epoch"]) for h in history if math.isfinite(h.get("val_background_share", math.nan))]


def _same_run(every: list[dict[str, float]], sparse: list[dict[str, float]]) -> None:
    """The two histories agree on every value (NaN on NaN), the skipped audits aside."""
    assert len(every) == len(sparse)
    for a, b in zip(every, sparse, strict=True):
        assert set(b) <= set(a) and set(a) - set(b) <= {"val_background_share"}
        for k, v in b.items():
            assert v == a[k] or (math.isnan(v) and math.isnan(a[k])), (b["epoch"], k)


def test_the_standard_model_audits_every_few_epochs_and_trains_the_same() -> None:
    data = _data()
    every = train(_cfg(mode="standard", audit_every=1), data, progress=False)
    sparse = train(_cfg(mode="standard", audit_every=3), data, progress=False)
    assert _audited(every.history) == list(range(7))
    assert _audited(sparse.history) == [0, 3, 6]  # every third epoch and the last
    _same_run(every.history, sparse.history)
    assert every.best_epoch == sparse.best_epoch
    chosen = sparse.model.state_dict()
    for name, a in every.model.state_dict().items():
        assert torch.equal(a, chosen[name]), name


def test_the_isnet_phase_audits_every_epoch() -> None:
    data = _data()
    cfg = _cfg(mode="isnet", epochs=6, warmup_epochs=3, audit_every=4, distill={"teacher_epochs": 0})
    sparse = train(cfg, data, progress=False)
    every = train(cfg.model_copy(update={"audit_every": 1}), data, progress=False)
    assert sparse.isnet_start == 3
    assert _audited(sparse.history) == [0, 3, 4, 5]  # warm-up epochs 1-2 skipped; the ISNet phase each epoch
    _same_run(every.history, sparse.history)
    assert every.best_epoch == sparse.best_epoch
