"""ISNet loss terms against hand computations; numerical robustness; C1/C2 estimation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from isnetflow.config import HeatmapLossConfig
from isnetflow.isnet import (
    ForegroundRangeEstimator,
    ISNetLossConfig,
    background_loss,
    foreground_loss,
    global_weighted_rank_pooling,
    heatmap_loss,
    isnet_loss,
)

DT = torch.float64

# One 1-channel 2x2 map: |R| = [1, 2, 0.5, 4]; the top row is inside the mask.
R_MAP = torch.tensor([[[[1.0, -2.0], [0.5, 4.0]]]], dtype=DT)  # (B=1, C=1, H=2, W=2)
MASK = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]], dtype=DT)  # (B=1, H, W)


def test_gwrp_hand_values():
    x = torch.tensor([1.0, 3.0, 2.0], dtype=DT)
    # d = 0.5: sorted [3, 2, 1], weights [1, 0.5, 0.25] / 1.75
    assert float(global_weighted_rank_pooling(x, 0.5)) == pytest.approx((3 + 1 + 0.25) / 1.75, rel=1e-14)
    assert float(global_weighted_rank_pooling(x, 0.0)) == 3.0  # maximum
    assert float(global_weighted_rank_pooling(x, 1.0)) == pytest.approx(2.0, rel=1e-14)  # mean
    rows = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 4.0]], dtype=DT)
    expected = torch.tensor([4.25 / 1.75, (4 + 0 - 0.25) / 1.75], dtype=DT)
    torch.testing.assert_close(global_weighted_rank_pooling(rows, 0.5, dim=1), expected)
    torch.testing.assert_close(global_weighted_rank_pooling(rows.T, 0.5, dim=0), expected)
    with pytest.raises(ValueError, match="d must be"):
        global_weighted_rank_pooling(x, 1.5)


@pytest.mark.parametrize("d", [0.3, 0.9, 0.99])
def test_gwrp_long_vectors_match_the_definition(d):
    """The top-k shortcut equals the full sorted weighted sum (written out with a Python loop)."""
    values = torch.rand(3000, dtype=DT, generator=torch.Generator().manual_seed(0))
    ordered = sorted(values.tolist(), reverse=True)
    weights = [d**i for i in range(len(ordered))]
    expected = sum(w * v for w, v in zip(weights, ordered, strict=True)) / sum(weights)
    assert float(global_weighted_rank_pooling(values, d)) == pytest.approx(expected, rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=30),
    st.floats(0.0, 1.0),
)
def test_gwrp_properties(values, d):
    x = torch.tensor(values, dtype=DT)
    pooled = float(global_weighted_rank_pooling(x, d))
    assert float(x.min()) - 1e-9 <= pooled <= float(x.max()) + 1e-9
    permuted = float(global_weighted_rank_pooling(x.flip(0), d))
    assert permuted == pytest.approx(pooled, rel=1e-12, abs=1e-12)


def test_background_loss_hand_computation():
    # In-mask mean of |R| = (1 + 2) / 2 = 1.5 -> normalised outside values [1/3, 8/3] (+ zeros in the mask);
    # GWRP (d = 0.9) over [8/3, 1/3, 0, 0]: (8/3 + 0.9 / 3) / (1 + 0.9 + 0.81 + 0.729).
    b = (8 / 3 + 0.9 / 3) / (1 + 0.9 + 0.81 + 0.729)
    expected = -math.log(1 - b / (b + 1.0))
    got = background_loss(R_MAP, MASK, d=0.9, E=1.0)
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(expected, rel=1e-9)
    # E = 2, d = 0 (maximum): b = 8/3, loss = -log(1 - b / (b + 2))
    assert float(background_loss(R_MAP, MASK, d=0.0, E=2.0)[0]) == pytest.approx(
        -math.log(1 - (8 / 3) / (8 / 3 + 2)), rel=1e-9
    )


def test_signed_normalization_hand_computation_and_cancellation():
    # norm="signed": in-mask mean of the signed R = (1 - 2) / 2 = -0.5 -> |R / -0.5| outside = [1, 8].
    b = (8 + 0.9 * 1) / (1 + 0.9 + 0.81 + 0.729)
    got = background_loss(R_MAP, MASK, d=0.9, E=1.0, norm="signed")
    assert float(got[0]) == pytest.approx(math.log(1 + b), rel=1e-9)
    # A +/- checkerboard in the lungs carries no net evidence: it lowers the authors' "abs" term (the mean
    # of |R| inside grows) but raises the "signed" one (the signed mean inside shrinks).
    base = torch.zeros(1, 1, 4, 4, dtype=DT)
    mask = torch.zeros(1, 4, 4, dtype=DT)
    mask[:, :2] = 1
    base[0, 0, :2] = 1.0  # uniform in-lung evidence
    base[0, 0, 3, 3] = 2.0  # one background hot spot
    checker = base.clone()
    checker[0, 0, :2] += 3.0 * torch.tensor([[1.0, -1.0, 1.0, -1.0], [-1.0, 1.0, -1.0, 1.0]], dtype=DT)
    for norm, lower in (("abs", True), ("signed", False)):
        before = float(background_loss(base, mask, d=0.9, E=1.0, norm=norm)[0])
        after = float(background_loss(checker, mask, d=0.9, E=1.0, norm=norm)[0])
        assert (after < before) is lower, norm
    with pytest.raises(ValueError, match="norm"):
        background_loss(R_MAP, MASK, d=0.9, E=1.0, norm="max")


def test_foreground_loss_hand_computation():
    # In-mask absolute relevance S = |1| + |-2| = 3.
    assert float(foreground_loss(R_MAP, MASK, C1=1.0, C2=2.0)[0]) == pytest.approx(1.0)  # (3-2)^2 / 1
    assert float(foreground_loss(R_MAP, MASK, C1=4.0, C2=10.0)[0]) == pytest.approx(1 / 16)  # (3-4)^2/16
    assert float(foreground_loss(R_MAP, MASK, C1=1.0, C2=25.0)[0]) == 0.0
    # Signed sum would be -1; the loss uses |R| (as the authors): S = 3 is inside [2, 5].
    assert float(foreground_loss(R_MAP, MASK, C1=2.0, C2=5.0)[0]) == 0.0


def test_several_maps_and_mask_layouts():
    second = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]]]], dtype=DT)
    maps = torch.stack([R_MAP, second], dim=1)  # (B=1, K=2, C=1, H, W)
    # Map 2: in-mask |R| mean 0.5, outside values [2 / 0.5, 0] = [4, 0] -> b = 4 / 3.439; S = 1.
    b1 = (8 / 3 + 0.9 / 3) / 3.439
    b2 = 4 / 3.439
    expected_bg = (math.log(1 + b1) + math.log(1 + b2)) / 2  # -log(1 - b/(b+1)) = log(1 + b)
    expected_fg = ((3 - 2) ** 2 / 4 + (1 - 2) ** 2 / 4) / 2  # C1 = C2 = 2: (S - 2)^2 / 4, mean of maps
    for mask in (MASK, MASK[:, None], MASK[:, None].bool()):
        assert float(background_loss(maps, mask, d=0.9, E=1.0)[0]) == pytest.approx(expected_bg, rel=1e-9)
        assert float(foreground_loss(maps, mask, C1=2.0, C2=2.0)[0]) == pytest.approx(expected_fg, rel=1e-12)


def test_total_loss_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=DT)
    labels = torch.tensor([0, 0])
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    heatmaps = torch.cat([R_MAP, 2 * R_MAP])  # sample 2: |R| doubled -> same background, S = 6
    masks = torch.cat([MASK, MASK])
    cfg = ISNetLossConfig(P=0.6, A=2.0, B=0.5, d=0.9, E=1.0, C1=1.0, C2=4.0)
    b = (8 / 3 + 0.9 / 3) / 3.439
    bg = math.log(1 + b)
    fg = (0.0 + (6 - 4) ** 2) / 2  # sample 1: S = 3 in [1, 4]; sample 2: S = 6
    terms = isnet_loss(logits, labels, heatmaps, masks, cfg)
    assert float(terms.cross_entropy) == pytest.approx(ce, rel=1e-12)
    assert float(terms.background) == pytest.approx(bg, rel=1e-9)
    assert float(terms.foreground) == pytest.approx(fg, rel=1e-12)
    assert float(terms.loss) == pytest.approx(0.4 * ce + 0.6 * (2.0 * bg + 0.5 * fg), rel=1e-9)
    plain = isnet_loss(logits, labels, None, None, cfg)
    assert float(plain.loss) == pytest.approx(ce, rel=1e-12) and float(plain.background) == 0.0
    with pytest.raises(ValueError, match="masks"):
        isnet_loss(logits, labels, heatmaps, None, cfg)


@pytest.mark.parametrize("case", ["zero relevance", "empty mask", "full mask"])
def test_gradients_stay_finite(case):
    torch.manual_seed(0)
    rel = torch.randn(2, 2, 1, 8, 8, dtype=DT)
    mask = (torch.rand(2, 8, 8, dtype=DT) > 0.5).to(DT)
    if case == "zero relevance":
        rel = torch.zeros_like(rel)
    elif case == "empty mask":
        mask = torch.zeros_like(mask)
    else:
        mask = torch.ones_like(mask)
    rel.requires_grad_(True)
    bg, fg = heatmap_loss(rel, mask, ISNetLossConfig())
    (bg + fg).backward()
    bg, fg = bg.detach(), fg.detach()
    assert torch.isfinite(bg) and torch.isfinite(fg)
    assert rel.grad is not None and torch.isfinite(rel.grad).all()
    if case == "full mask":
        assert float(bg) == 0.0
    if case == "empty mask":  # everything is background: b / (b + E) saturates at the clamp
        assert float(bg) == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_shape_validation():
    with pytest.raises(ValueError, match="heatmaps"):
        background_loss(torch.zeros(2, 8, 8), torch.ones(2, 8, 8), d=0.9, E=1.0)
    with pytest.raises(ValueError, match="do not fit"):
        background_loss(torch.zeros(2, 1, 8, 8), torch.ones(2, 4, 4), d=0.9, E=1.0)
    with pytest.raises(ValueError, match="do not fit"):
        foreground_loss(torch.zeros(2, 1, 8, 8), torch.ones(3, 8, 8), C1=1.0, C2=2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"P": 1.5}, r"(?s)\bP\b.*less than or equal to 1"),
        ({"E": 0.0}, r"(?s)\bE\b.*greater than 0"),
        ({"d": -0.1}, r"(?s)\bd\b.*greater than or equal to 0"),
        ({"C1": 3.0, "C2": 2.0}, r"C1 \(3.0\) must not exceed heatmap.C2"),
        ({"C1": 0.0}, r"(?s)\bC1\b.*greater than 0"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"low": 1.0, "high": 0.0}, "low"),
        ({"A": -1.0}, r"(?s)\bA\b.*greater than or equal to 0"),
        ({"stochastic_anchor_prob": 2.0}, "stochastic_anchor_prob"),
        ({"variant": "lasso"}, "unknown ISNet variant 'lasso'"),
        ({"gamma": 1.0}, "gamma"),  # not a setting of the objective
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ISNetLossConfig(**kwargs)


def test_config_defaults_and_immutability():
    cfg = ISNetLossConfig()
    assert (cfg.P, cfg.A, cfg.B, cfg.E, cfg.d, cfg.norm) == (0.7, 1.0, 3.0, 1.0, 0.999, "abs")
    settings = HeatmapLossConfig()  # one set of defaults: the settings'
    assert (cfg.P, cfg.A, cfg.B, cfg.E, cfg.d, cfg.norm) == (
        settings.P,
        settings.A,
        settings.B,
        settings.E,
        settings.d,
        settings.norm,
    )
    for name in HeatmapLossConfig.model_fields:  # every setting, with the settings' default
        if name not in ("C1", "C2"):  # resolved to numbers here; the settings' C1/C2 may be None (warm-up)
            assert getattr(cfg, name) == getattr(settings, name), name
    assert (cfg.C1, cfg.C2) == (settings.C1, settings.C2)
    with pytest.raises(ValueError, match="frozen"):
        cfg.P = 0.5  # type: ignore[misc]


def _maps_with_sums(sums: list[float]) -> torch.Tensor:
    maps = torch.zeros(len(sums), 1, 4, 4, dtype=DT)
    for i, total in enumerate(sums):
        maps[i, 0, 0, 0] = total / 2
        maps[i, 0, 3, 3] = -total / 2  # outside the mask used below
    return maps


def test_foreground_range_estimator_matches_hand_welford():
    est = ForegroundRangeEstimator()
    est.update(_maps_with_sums([1.0, 2.0]))
    est.update(_maps_with_sums([3.0, 4.0]))
    mean, std = 2.5, math.sqrt(5 / 3)  # sample standard deviation of [1, 2, 3, 4]
    assert est.count == 4 and est.mean == pytest.approx(mean) and est.std == pytest.approx(std)
    c1, c2 = est.result()
    assert c1 == pytest.approx(max(mean / 5, mean - 3 * std))  # 0.5
    assert c2 == pytest.approx(min(25 * c1, mean + 3 * std))  # 6.373
    # Region "mask": only the in-mask half of every map counts.
    mask = torch.zeros(4, 4, 4, dtype=DT)
    mask[:, 0, 0] = 1
    masked = ForegroundRangeEstimator(region="mask")
    masked.update(_maps_with_sums([1.0, 2.0, 3.0, 4.0]), mask)
    assert masked.mean == pytest.approx(1.25) and masked.std == pytest.approx(std / 2)


def test_foreground_range_estimator_errors():
    est = ForegroundRangeEstimator()
    est.update(_maps_with_sums([1.0]))
    with pytest.raises(ValueError, match="two samples"):
        est.result()
    with pytest.raises(ValueError, match="masks"):
        ForegroundRangeEstimator(region="mask").update(_maps_with_sums([1.0]))
    with pytest.raises(ValueError, match="region"):
        ForegroundRangeEstimator(region="lungs")  # type: ignore[arg-type]
