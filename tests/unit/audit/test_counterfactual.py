"""Counterfactual background swap and background share on hand-built toy models.

Images are 1x16x16. The "lungs" are the central 8x8 square; a positive image has a bright lesion in
the lungs *and* (the shortcut) a bright tag in the top-left corner. ``BackgroundReader`` looks only at
the corner tag, ``LungReader`` only at the lesion; both are single linear layers built by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from isnetflow.audit.counterfactual import choose_donors, counterfactual_test, swap_background
from isnetflow.audit.explain import background_share, explain
from isnetflow.evaluation.metrics import positive_scores

S = 16
LUNG = np.zeros((S, S), dtype=bool)
LUNG[4:12, 4:12] = True
TAG = (slice(0, 3), slice(0, 3))
LESION = (slice(6, 10), slice(6, 10))


def _image(positive: bool, rng: np.random.Generator) -> np.ndarray:
    img = 0.2 + 0.05 * rng.random((S, S))
    img[LUNG] = 0.4 + 0.05 * rng.random(int(LUNG.sum()))
    if positive:
        img[TAG] = 0.95
        img[LESION] = 0.9
    return img.astype(np.float32)


def _reader(region: tuple[slice, slice]) -> nn.Module:
    """logit_1 - logit_0 = 20 * (mean intensity of ``region`` - 0.6): positive iff the region is bright."""
    w = torch.zeros(S, S)
    w[region] = 1.0
    w = w / w.sum()
    lin = nn.Linear(S * S, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = 20 * w.flatten()
        lin.bias.copy_(torch.tensor([0.0, -12.0]))
    return nn.Sequential(nn.Flatten(1), lin).eval()


@pytest.fixture(scope="module")
def toy_data() -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
    rng = np.random.default_rng(0)
    labels = [0, 1, 0, 1, 0, 1, 1, 0]
    sites = ["A", "A", "A", "A", "B", "B", "B", "B"]
    images = np.stack([_image(bool(y), rng) for y in labels])[:, None]
    masks = np.repeat(LUNG[None, None].astype(np.float32), len(labels), axis=0)
    return images, masks, sites, labels


def _score_fn(model: nn.Module):
    def fn(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return positive_scores(torch.softmax(model(torch.from_numpy(batch)), 1).numpy())

    return fn


def test_swap_construction_keeps_recipient_inside_union_and_donor_outside() -> None:
    a = np.full((1, 6, 6), 0.1, dtype=np.float32)
    b = np.full((1, 6, 6), 0.9, dtype=np.float32)
    ma = np.zeros((1, 6, 6), dtype=np.float32)
    mb = np.zeros((1, 6, 6), dtype=np.float32)
    ma[0, 1:3, 1:3] = 1
    mb[0, 2:5, 2:5] = 1  # B's lungs overlap A's only partly
    c = swap_background(a, ma, b, mb)
    union = (ma > 0.5) | (mb > 0.5)
    assert (c[union] == 0.1).all(), "inside the union every pixel is the recipient's"
    assert (c[~union] == 0.9).all(), "outside the union every pixel is the donor's"
    assert not (c[mb > 0.5] == 0.9).any(), "no pixel of the donor's lungs survives"
    with pytest.raises(ValueError, match="shapes differ"):
        swap_background(a, ma, b[:, :5], mb)


def test_donors_come_from_another_site_with_the_other_label() -> None:
    sites = ["A", "A", "B", "B", "C"]
    labels = [0, 1, 0, 1, 1]
    donors = choose_donors(sites, labels, range(5), range(5), pairing="opposite_label", seed=1)
    for r, d in enumerate(donors):
        assert d is not None and sites[d] != sites[r] and labels[d] != labels[r]
    # "random" pairing only requires another site; a single-site pool has no donor at all
    donors = choose_donors(sites, labels, range(5), range(5), pairing="random", seed=1)
    assert all(d is not None and sites[d] != sites[r] for r, d in enumerate(donors))
    assert choose_donors(["A", "A"], [0, 1], [0, 1], [0, 1]) == [None, None]


def test_background_reader_flips_and_lung_reader_does_not(toy_data) -> None:
    images, masks, sites, labels = toy_data
    idx = list(range(len(labels)))
    bg_model, lung_model = _reader(TAG), _reader(LESION)
    for model in (bg_model, lung_model):  # both are perfect on the original images
        scores = _score_fn(model)(images)
        assert ((scores >= 0.5) == np.array(labels, dtype=bool)).all()

    bg = counterfactual_test(_score_fn(bg_model), images, masks, sites, labels, idx, idx, threshold=0.5)
    lung = counterfactual_test(_score_fn(lung_model), images, masks, sites, labels, idx, idx, threshold=0.5)
    assert bg.n_pairs == lung.n_pairs == 8
    assert bg.flip_rate == 1.0 and bg.mean_abs_score_change > 0.9
    assert lung.flip_rate == 0.0 and lung.mean_abs_score_change < 1e-6
    assert set(bg.per_site) == {"A", "B"} and bg.per_site["A"]["flip_rate"] == 1.0
    summary = bg.summary()
    assert summary["flip_rate"] == 1.0 and "union" in str(summary["construction"])


def test_background_share_separates_the_two_readers(toy_data) -> None:
    images, masks, _, labels = toy_data
    x = torch.from_numpy(images)
    targets = torch.tensor(labels)
    pos = np.array(labels) == 1
    for composite in ("epsilon_gamma_box", "epsilon"):
        rel_bg = explain(_reader(TAG), x, targets, composite=composite)  # type: ignore[arg-type]
        rel_lung = explain(_reader(LESION), x, targets, composite=composite)  # type: ignore[arg-type]
        share_bg = background_share(rel_bg, masks)[pos]
        share_lung = background_share(rel_lung, masks)[pos]
        assert (share_bg > 0.99).all(), composite
        assert (share_lung < 0.01).all(), composite
    # The flat rule spreads a first layer's relevance uniformly over its receptive field -- here the whole
    # image -- so both readers get the background's *area* share (192 / 256): why it is not the default.
    for region in (TAG, LESION):
        rel = explain(_reader(region), x, targets, composite="epsilon_plus_flat")
        assert background_share(rel, masks)[pos] == pytest.approx(0.75)


def test_background_share_by_hand() -> None:
    rel = np.array([[[[1.0, -2.0], [3.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    mask = np.array([[[[1, 0], [0, 0]]], [[[1, 1], [1, 1]]]], dtype=np.float32)
    share = background_share(rel, mask)
    assert share[0] == pytest.approx(3.0 / 4.0)  # negative relevance is ignored
    assert np.isnan(share[1])  # no positive relevance at all
