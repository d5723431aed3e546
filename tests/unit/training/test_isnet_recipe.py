"""The ISNet recipe: one objective, gradient balance, shortcut-free warm-up, selection, diagnostics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isnetflow.config import AuditConfig, DistillConfig, HeatmapLossConfig, TrainConfig
from isnetflow.isnet import (
    ISNetLossConfig,
    ISNetOutput,
    isnet_loss,
    isnet_objective,
    loss_config_from_settings,
    step_gradients,
)
from isnetflow.nets import build_model
from isnetflow.training.data import TrainData, shortcut_free_inputs
from isnetflow.training.loop import train
from isnetflow.training.selection import choose_from_front, selection_score, update_front
from isnetflow.training.streams import RandomStreams


def _uncapped(
    lcfg: ISNetLossConfig, balance: float | None = None, projection: bool = False
) -> ISNetLossConfig:
    return lcfg.model_copy(update={"grad_balance": balance, "grad_projection": projection})


def _data(n: int = 24, size: int = 32, seed: int = 0) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g)
    masks = torch.zeros(n, 1, size, size)
    masks[:, :, 8:24, 6:14] = 1
    masks[:, :, 8:24, 18:26] = 1
    labels = torch.arange(n) % 2
    splits = (["train"] * 16 + ["val"] * 8)[:n] if n >= 24 else ["train"] * n
    return TrainData(
        images, masks, labels, ["normal", "covid"], [f"p{i}" for i in range(n)], ["A"] * n, splits
    )


def _cfg(**update: object) -> TrainConfig:
    base = TrainConfig(
        model="cnn-small", image_size=32, batch_size=16, epochs=1, warmup_epochs=0, audit_samples=4,
        num_threads=1, device="cpu", augment={"prob": 0.0, "noise_std": 0.0},
        heatmap=HeatmapLossConfig(C1=0.5, C2=4.0),
    )  # fmt: skip
    return base.model_copy(update=update)


def test_the_loop_optimizes_isnet_loss_exactly() -> None:
    """The loss the training loop records for a batch is ``isnet_loss`` of that batch (class weights too)."""
    data = _data()
    counts = torch.bincount(torch.tensor([0] * 5 + [1] * 11), minlength=2).float()
    data.labels[:16] = torch.tensor([0] * 5 + [1] * 11)  # imbalanced: the class weights matter
    # raw batches, so the batch can be rebuilt here; which images the steps see is tested separately
    # (test_isnet_steps_see_background_swapped_images); no teacher, whose part and weights are tested apart
    # (test_distill.py)
    cfg = _cfg(isnet_swap_fraction=0.0, distill=DistillConfig(teacher_epochs=0))
    result = train(cfg, data, progress=False)
    # rebuild the first (only) step: same initial weights, same batch order, no augmentation
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=2, in_channels=1).train()
    streams = RandomStreams(cfg.seed)
    train_idx = data.indices("train")
    perm = torch.randperm(train_idx.size, generator=streams.epoch_order(0))
    idx = train_idx[perm[:16].numpy()]
    x, m, y = data.images[idx], data.masks[idx], data.labels[idx]
    weight = counts.sum() / (2 * counts)
    lcfg = loss_config_from_settings(cfg.heatmap, 0.5, 4.0)
    gen = streams.generator("heatmap_classes", 0)
    out = isnet_objective(model, x, y, m, lcfg, generator=gen, class_weight=weight)
    assert out.heatmaps is not None
    direct = isnet_loss(out.logits, y, out.heatmaps, m, lcfg, class_weight=weight)
    assert float(direct.loss.detach()) == pytest.approx(result.history[0]["train_loss"], rel=1e-6)
    assert float(direct.cross_entropy.detach()) == pytest.approx(result.history[0]["train_ce"], rel=1e-6)
    # and it is the weighted objective, not the unweighted one
    unweighted = isnet_loss(out.logits, y, out.heatmaps, m, lcfg)
    assert float(unweighted.loss.detach()) != pytest.approx(result.history[0]["train_loss"], rel=1e-4)
    expected = (1 - lcfg.P) * F.cross_entropy(out.logits, y, weight=weight) + lcfg.P * (
        lcfg.A * direct.background + lcfg.B * direct.foreground
    )
    assert float(expected.detach()) == pytest.approx(float(direct.loss.detach()), rel=1e-6)


def test_step_gradients_sum_to_the_loss_gradient_and_balance_caps_the_heatmap_part() -> None:
    data = _data()
    x, m, y = data.images[:8], data.masks[:8], data.labels[:8]
    lcfg = loss_config_from_settings(HeatmapLossConfig(), 0.5, 4.0)
    torch.manual_seed(0)
    model = build_model("cnn-small", num_classes=2, in_channels=1)

    def grads(balance: float | None) -> tuple[list[torch.Tensor], dict[str, float]]:
        model.zero_grad(set_to_none=True)
        out = isnet_objective(model, x, y, m, lcfg)
        info = step_gradients(model, out, _uncapped(lcfg, balance)).as_dict()
        return [p.grad.clone() for p in model.parameters()], info

    model.zero_grad(set_to_none=True)
    isnet_objective(model, x, y, m, lcfg).loss.backward()
    reference = [p.grad.clone() for p in model.parameters()]
    plain, info = grads(None)
    for a, b in zip(plain, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-6)
    assert info["heatmap_grad_scale"] == 1.0 and -1.0 <= info["grad_cosine"] <= 1.0
    ratio = info["grad_norm_heatmap"] / info["grad_norm_ce"]
    cap = ratio / 4  # a cap that binds
    capped, info2 = grads(cap)
    assert info2["heatmap_grad_scale"] == pytest.approx(0.25, rel=1e-6)
    # the capped gradient is CE part + 1/4 heatmap part
    model.zero_grad(set_to_none=True)
    out = isnet_objective(model, x, y, m, lcfg)
    params = list(model.parameters())
    g_ce = torch.autograd.grad((1 - lcfg.P) * out.cross_entropy, params, retain_graph=True)
    g_hm = torch.autograd.grad(lcfg.P * out.heatmap, params)
    for c, a, b in zip(capped, g_ce, g_hm, strict=True):
        torch.testing.assert_close(c, a + 0.25 * b, rtol=1e-3, atol=2e-6)
    _, loose = grads(ratio * 2)  # a cap that does not bind
    assert loose["heatmap_grad_scale"] == 1.0


def test_background_swap_keeps_the_lungs_and_takes_another_images_background() -> None:
    data = _data(n=6)
    x, m = data.images, data.masks
    out = shortcut_free_inputs(x, m, "background_swap", torch.Generator().manual_seed(3))
    inside = m > 0.5
    assert torch.equal(out[inside], x[inside])  # every image keeps its own lungs
    for i in range(6):
        outside = ~inside[i]
        # the background is exactly one *other* image's background
        donors = [j for j in range(6) if torch.equal(out[i][outside], x[j][outside])]
        assert donors and i not in donors
    assert torch.equal(shortcut_free_inputs(x, m, "masked"), x * m)
    assert shortcut_free_inputs(x, m, "raw") is x
    with pytest.raises(ValueError, match="unknown warm-up inputs"):
        shortcut_free_inputs(x, m, "noise")


def test_background_fade_scales_only_the_donor_background() -> None:
    """``train.background_fade_epochs``: scale 0 is the union of the lungs on black, 1 the full composite."""
    data = _data(n=6)
    x, m = data.images, data.masks
    full = shortcut_free_inputs(x, m, "background_swap", torch.Generator().manual_seed(3))
    same = shortcut_free_inputs(
        x, m, "background_swap", torch.Generator().manual_seed(3), background_scale=1.0
    )
    half = shortcut_free_inputs(
        x, m, "background_swap", torch.Generator().manual_seed(3), background_scale=0.5
    )
    dark = shortcut_free_inputs(
        x, m, "background_swap", torch.Generator().manual_seed(3), background_scale=0.0
    )
    assert torch.equal(same, full)
    kept = dark != 0
    assert torch.equal(dark[kept], full[kept]) and torch.equal(half[kept], full[kept])  # the lungs' union
    torch.testing.assert_close(half[~kept], 0.5 * full[~kept])
    assert (dark[~kept] == 0).all() and (full[~kept] != 0).any()


def test_background_swap_uses_the_union_of_both_masks() -> None:
    """No pixel of the donor's lungs survives in the composite (the counterfactual construction)."""
    x = torch.stack([torch.full((1, 8, 8), 0.2), torch.full((1, 8, 8), 0.9)])
    m = torch.zeros(2, 1, 8, 8)
    m[0, :, 1:3, 1:3] = 1
    m[1, :, 5:7, 5:7] = 1
    out = shortcut_free_inputs(x, m, "background_swap", torch.Generator().manual_seed(0))
    # image 0 receives image 1's background, but image 1's lung square carries image 0's pixels
    assert torch.all(out[0, :, 5:7, 5:7] == 0.2) and torch.all(out[0, :, 0, 7] == 0.9)
    assert torch.all(out[1, :, 1:3, 1:3] == 0.9) and torch.all(out[1, :, 0, 7] == 0.2)


def test_selection_never_prefers_an_inverted_classifier_and_weighs_the_limits() -> None:
    cfg = _cfg(
        selection="auc_within_background", selection_max_background=0.3, selection_max_swap_change=0.05
    )
    good = {"val_auc": 0.95, "val_background_share": 0.25, "val_swap_change": 0.02, "val_isnet_loss": 2.0}
    inverted = {"val_auc": 0.10, "val_background_share": 0.05, "val_swap_change": 0.0, "val_isnet_loss": 0.5}
    leaky = {"val_auc": 0.99, "val_background_share": 0.60, "val_swap_change": 0.3, "val_isnet_loss": 3.0}
    score = lambda m: selection_score(cfg, m, isnet_phase=True)  # noqa: E731
    assert score(good) < score(leaky) < score(inverted)
    # the old objective prefers the inverted classifier: that is why it is not the default
    old = cfg.model_copy(update={"selection": "objective"})
    assert selection_score(old, inverted, isnet_phase=True) < selection_score(old, good, isnet_phase=True)
    # just over the swap limit with a far better AUC beats chance level inside the limits (measured case)
    near = {"val_auc": 0.94, "val_background_share": 0.11, "val_swap_change": 0.06}
    chance = {"val_auc": 0.50, "val_background_share": 0.24, "val_swap_change": 0.05}
    assert score(near) < score(chance)
    # equal AUC: the one within the limits wins; a missing measurement is no violation; NaN never wins
    assert score(good) < score({**good, "val_swap_change": 0.2})
    assert score({"val_auc": 0.9}) == pytest.approx(-0.9)
    assert math.isinf(score({"val_auc": float("nan"), "val_background_share": 0.1}))


def test_auc_tolerance_selection_keeps_the_front_and_never_a_far_worse_auc() -> None:
    """selection_auc_tolerance: the best score among epochs within the tolerance of the best AUC, chosen at
    the end from the epochs no other epoch beats on both (the swap arm's case: every epoch over the
    background limit, so the plain score kept a chance-level early epoch)."""
    model = torch.nn.Linear(2, 2)
    front: list[dict[str, Any]] = []
    # (epoch, val AUC, selection score): lower score is better
    epochs = [(4, 0.58, 1.2), (5, 0.70, 1.5), (10, 0.89, 2.0), (20, 0.95, 2.6), (21, 0.93, 2.7)]
    for epoch, auc, score in epochs:
        with torch.no_grad():
            model.bias.fill_(epoch)
        update_front(front, epoch, auc, score, model)
    assert [f["epoch"] for f in front] == [4, 5, 10, 20]  # epoch 21 is beaten by 20 on both
    assert choose_from_front(front, 0.05)["epoch"] == 20  # 0.89 is more than 0.05 below 0.95
    assert choose_from_front(front, 0.06)["epoch"] == 10
    chosen = choose_from_front(front, 1.0)
    assert chosen["epoch"] == 4 and float(chosen["state"]["bias"][0]) == 4.0  # the weights of that epoch
    # a later epoch that beats everything on both replaces the whole front
    update_front(front, 30, 0.97, 0.5, model)
    assert [f["epoch"] for f in front] == [30]


def test_auc_tolerance_selection_in_training() -> None:
    cfg = _cfg(mode="isnet", epochs=4, warmup_epochs=1, selection_auc_tolerance=0.05)
    result = train(cfg, _data(), progress=False)
    isnet_epochs = [h for h in result.history if h["heatmap_loss_on"]]
    best = max(h["val_auc"] for h in isnet_epochs)
    assert result.best_epoch >= 1 and result.best_val_auc >= best - 0.05
    assert result.best_val_auc == result.history[result.best_epoch]["val_auc"]


def test_diagnostics_are_in_the_history_and_logged(
    tmp_path: Path, tiny_validated: Path, tiny_cohort: Path, tiny_train_config: TrainConfig
) -> None:
    from isnetflow.stages import train as stage

    cfg = tiny_train_config.model_copy(update={"mode": "isnet", "epochs": 3, "warmup_epochs": 1})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = stage.run(cfg, tiny_validated, tiny_cohort / "masks", tmp_path / "out", tracking_uri=uri,
                        classes=["normal", "covid"])  # fmt: skip
    client = mlflow.MlflowClient(uri)
    keys = ("train_ce", "train_background", "train_foreground", "train_grad_norm_ce",
            "train_grad_norm_heatmap", "train_grad_cosine", "train_share_below_c1",
            "train_share_above_c2")  # fmt: skip
    for key in keys:
        values = [m.value for m in client.get_metric_history(summary["run_id"], key)]
        assert len(values) == (cfg.epochs if key == "train_ce" else cfg.epochs - cfg.warmup_epochs), key
        assert all(np.isfinite(values)), key
    cos = [m.value for m in client.get_metric_history(summary["run_id"], "train_grad_cosine")]
    assert all(-1.0 <= c <= 1.0 for c in cos)
    assert len(client.get_metric_history(summary["run_id"], "val_auc")) == cfg.epochs
    artifacts = [a.path for a in client.list_artifacts(summary["run_id"], "figures")]
    assert "figures/learning_curves.png" in artifacts
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 10_000


def test_a_part_added_to_the_objective_reaches_the_history_and_the_validation_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new part of the objective is recorded under its own name, ``train_<name>`` from the steps and
    ``val_<name>`` from the validation (:func:`val_heatmap_terms`), with no edit of either; the parts of
    today keep their keys."""
    import isnetflow.isnet.objective as objective
    from isnetflow.training.validation import val_heatmap_terms

    real_loss = objective.isnet_loss

    def with_dummy(logits, *args, **kwargs):  # type: ignore[no-untyped-def]
        return real_loss(logits, *args, **kwargs).with_parts({"dummy": 0.25 * logits.pow(2).mean()})

    monkeypatch.setattr(objective, "isnet_loss", with_dummy)
    data = _data()
    cfg = _cfg(epochs=2, warmup_epochs=1, audit_samples=0, distill=DistillConfig(teacher_epochs=0))
    result = train(cfg, data, progress=False)
    warmup, isnet = result.history
    assert "train_dummy" not in warmup and "val_dummy" not in warmup  # the heatmap loss was off
    assert isnet["train_dummy"] > 0 and isnet["val_dummy"] > 0
    today = {"train_ce", "train_background", "train_foreground", "train_share_below_c1",
             "train_share_above_c2", "val_background", "val_foreground", "val_isnet_loss"}  # fmt: skip
    assert today <= set(isnet) and "val_ce" in isnet

    val_idx = data.indices("val")
    lcfg = loss_config_from_settings(cfg.heatmap, 0.5, 4.0)
    terms = val_heatmap_terms(result.model, data, val_idx, lcfg, batch_size=3, seed=cfg.seed)
    assert list(terms) == ["loss", "ce", "background", "foreground", "dummy"]
    with torch.no_grad():
        logits = result.model.eval()(data.images[val_idx])
    assert terms["dummy"] == pytest.approx(0.25 * float(logits.pow(2).mean()), rel=1e-5)


def test_projection_removes_the_part_of_the_heatmap_gradient_that_opposes_cross_entropy() -> None:
    data = _data()
    x, m, y = data.images[:8], data.masks[:8], data.labels[:8]
    lcfg = loss_config_from_settings(HeatmapLossConfig(), 0.5, 4.0)
    torch.manual_seed(1)
    model = build_model("cnn-small", num_classes=2, in_channels=1)
    params = list(model.parameters())
    out = isnet_objective(model, x, y, m, lcfg)
    g_ce = torch.autograd.grad((1 - lcfg.P) * out.cross_entropy, params, retain_graph=True)
    g_hm = torch.autograd.grad(lcfg.P * out.heatmap, params)
    flat_ce = torch.cat([g.flatten() for g in g_ce]).double()
    # make the two parts conflict for sure: flip the heatmap part's sign when needed
    sign = -1.0 if float(flat_ce @ torch.cat([g.flatten() for g in g_hm]).double()) > 0 else 1.0

    model.zero_grad(set_to_none=True)
    out = isnet_objective(model, x, y, m, lcfg)
    flipped = ISNetOutput(parts={**out.parts, "heatmap": sign * out.parts["heatmap"]}, terms=out.terms)
    info = step_gradients(model, flipped, _uncapped(lcfg, projection=True)).as_dict()
    assert info["grad_cosine"] < 0
    total = torch.cat([p.grad.flatten() for p in params]).double()
    hm_part = total - flat_ce
    assert abs(float(hm_part @ flat_ce)) < 1e-6 * float(flat_ce @ flat_ce)  # orthogonal to the CE part
    assert float(total @ flat_ce) == pytest.approx(float(flat_ce @ flat_ce), rel=1e-4)


def test_validation_background_share_is_the_audit_measurement() -> None:
    """The selection limit's per-epoch background share is the background-share gate's own yardstick:
    zennit with the evaluation audit's composite, on the label logit, over the first ``audit_samples``
    validation images (a different LRP rule gave 0.2-0.5 less on the same model)."""
    from isnetflow.audit.explain import background_share, explain

    data = _data()
    cfg = _cfg(mode="standard", audit_samples=6)
    result = train(cfg, data, progress=False)
    idx = data.indices("val")[:6]
    rel = explain(result.model, data.images[idx], data.labels[idx], composite="epsilon_gamma_box")
    expected = float(np.nanmean(background_share(rel, data.masks[idx].numpy())))
    assert result.history[-1]["val_background_share"] == pytest.approx(expected, rel=1e-5)
    other = train(cfg.model_copy(update={"audit": AuditConfig(composite="epsilon")}), data, progress=False)
    assert other.history[-1]["val_background_share"] != pytest.approx(expected, rel=1e-3)


def test_no_early_stopping_by_default_and_patience_stops() -> None:
    data = _data()
    cfg = _cfg(mode="standard", epochs=4, audit_samples=0, optimizer="sgd", lr=1e-9)
    assert TrainConfig().patience is None
    full = train(cfg, data, progress=False)
    assert len(full.history) == 4  # an lr of 1e-9 never improves after epoch 0, and still all 4 ran
    stopped = train(cfg.model_copy(update={"patience": 1}), data, progress=False)
    assert len(stopped.history) < 4


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_isnet_steps_see_background_swapped_images(monkeypatch: pytest.MonkeyPatch, fraction: float) -> None:
    """``isnet_swap_fraction: 1`` (the default recipe): every image of every ISNet step keeps its own lungs on
    another image's background, so the cross-entropy never sees a background that predicts its label."""
    import isnetflow.isnet.objective as objective

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = objective.isnet_objective

    def spy(model, x, y, m, config, **kw):  # type: ignore[no-untyped-def]
        seen.append((x.detach().clone(), m.detach().clone()))
        return real(model, x, y, m, config, **kw)

    monkeypatch.setattr(objective, "isnet_objective", spy)  # the training step's objective
    data = _data()
    # one value per image
    data.images[:, :, :, :] = torch.arange(24, dtype=torch.float32).view(24, 1, 1, 1) / 24
    cfg = _cfg(isnet_swap_fraction=fraction, audit_samples=0)
    assert TrainConfig().isnet_swap_fraction == 1.0
    train(cfg, data, progress=False)
    assert seen
    for x, m in seen:
        inside, outside = m > 0.5, m <= 0.5
        for i in range(x.shape[0]):
            own = x[i][inside[i]].unique()
            assert own.numel() == 1  # the lungs are the image's own
            background = x[i][outside[i]].unique()
            if fraction == 1.0:
                assert own[0] not in background  # another image's background
            else:
                assert torch.equal(background, own)


def test_the_swap_arm_trains_the_isnet_schedule_and_inputs_without_the_relevance_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``relevance_loss: false`` (bench seeds' ``swap`` arm): the ISNet's warm-up inputs, swapped ISNet-phase
    batches and selection, but never the heatmap objective."""
    import isnetflow.isnet.objective as objective
    import isnetflow.training.steps as steps
    import isnetflow.training.validation as validation

    objective_calls: list[bool] = []
    swaps: list[str] = []
    real_objective, real_swap = objective.isnet_objective, steps.shortcut_free_inputs
    for module in (objective, validation):  # the training step's and the validation's objective
        monkeypatch.setattr(
            module, "isnet_objective", lambda *a, **k: objective_calls.append(True) or real_objective(*a, **k)
        )
    monkeypatch.setattr(
        steps,
        "shortcut_free_inputs",
        lambda x, m, how, g=None, **k: swaps.append(how) or real_swap(x, m, how, g, **k),
    )
    cfg = _cfg(relevance_loss=False, epochs=3, warmup_epochs=1, audit_samples=0)
    result = train(cfg, _data(), progress=False)
    assert not objective_calls  # no heatmap term, in training or validation
    assert [h["heatmap_loss_on"] for h in result.history] == [0.0, 0.0, 0.0]
    assert "train_background" not in result.history[-1]
    assert swaps == ["background_swap"] * 3  # the warm-up's step and both ISNet-phase steps
    assert result.best_epoch >= 1  # the ISNet's selection: warm-up epochs are never kept
    with pytest.raises(ValueError, match="relevance_loss"):
        TrainConfig(relevance_loss=False, selection="objective")


def test_the_warmup_ends_when_validation_auc_stops_rising() -> None:
    from isnetflow.training.phases import end_warmup_on_plateau
    from isnetflow.training.state import TrainState

    cfg = _cfg(warmup_epochs=2, warmup_patience=2, epochs=20)
    state = TrainState.start(cfg)
    assert state.isnet_start is None  # a warm-up with patience has no fixed end
    ends = []
    for epoch, auc in enumerate([0.6, 0.7, 0.8, 0.79, 0.8, 0.75, 0.9]):
        end_warmup_on_plateau(cfg, state, epoch, auc)
        ends.append(state.isnet_start)
    # 0.8 at epoch 2 is the best; epochs 3 and 4 do not beat it: the ISNet phase starts at epoch 5
    assert ends == [None, None, None, None, 5, 5, 5]
    # never before warmup_epochs, never after warmup_max_epochs (default half the schedule)
    early = _cfg(warmup_epochs=3, warmup_patience=1, epochs=20)
    state = TrainState.start(early)
    for epoch in range(3):
        end_warmup_on_plateau(early, state, epoch, 0.5)
    assert state.isnet_start == 3
    state = TrainState.start(cfg)
    for epoch in range(10):
        end_warmup_on_plateau(cfg.model_copy(update={"epochs": 8}), state, epoch, 0.5 + epoch / 100)
    assert state.isnet_start == 4
    # in the loop: a warm-up that keeps improving ends at warmup_max_epochs
    capped = _cfg(epochs=3, warmup_epochs=1, warmup_patience=100, warmup_max_epochs=2, audit_samples=0)
    result = train(capped, _data(), progress=False)
    assert [h["heatmap_loss_on"] for h in result.history] == [0.0, 0.0, 1.0]
    assert TrainConfig().warmup_patience is None  # the default: exactly warmup_epochs


def test_the_heatmap_ramp_scales_the_heatmap_gradient_over_the_first_isnet_epochs() -> None:
    data = _data()
    x, m, y = data.images[:8], data.masks[:8], data.labels[:8]
    lcfg = loss_config_from_settings(HeatmapLossConfig(), 0.5, 4.0)
    torch.manual_seed(0)
    model = build_model("cnn-small", num_classes=2, in_channels=1)
    params = list(model.parameters())
    out = isnet_objective(model, x, y, m, lcfg)
    g_ce = torch.autograd.grad((1 - lcfg.P) * out.cross_entropy, params, retain_graph=True)
    g_hm = torch.autograd.grad(lcfg.P * out.heatmap, params)
    model.zero_grad(set_to_none=True)
    info = step_gradients(model, isnet_objective(model, x, y, m, lcfg), _uncapped(lcfg), ramp=0.25).as_dict()
    assert info["heatmap_grad_scale"] == 0.25
    for p, a, b in zip(params, g_ce, g_hm, strict=True):
        torch.testing.assert_close(p.grad, a + 0.25 * b, rtol=1e-3, atol=2e-6)
    cfg = _cfg(epochs=3, warmup_epochs=0, audit_samples=0, heatmap=HeatmapLossConfig(
        C1=0.5, C2=4.0, grad_balance=None, ramp_epochs=2))  # fmt: skip
    scales = [h["train_heatmap_grad_scale"] for h in train(cfg, data, progress=False).history]
    assert scales == [0.5, 1.0, 1.0]
