"""The planted shortcut's kinds and placements: drawn only outside the lungs, near or far, at the set rate."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.config import ShortcutConfig, SynthConfig
from isnetflow.synth import generate_cohort, phi_coefficient, plan_cohort, render_item
from isnetflow.synth.cohort import cue_allowed
from isnetflow.synth.cues import PLACEMENTS, SHORTCUTS, draw_shortcut

KINDS = sorted(SHORTCUTS)


def _cfg(kind: str, placement: str, **kw: object) -> SynthConfig:
    return SynthConfig(shortcut=ShortcutConfig(kind=kind, placement=placement), **kw)  # type: ignore[arg-type]


def test_config_literals_match_the_registry() -> None:
    assert get_args(ShortcutConfig.model_fields["kind"].annotation) == tuple(SHORTCUTS)
    assert get_args(ShortcutConfig.model_fields["placement"].annotation) == PLACEMENTS
    assert ShortcutConfig().kind == "tag" and ShortcutConfig().placement == "far"


#: 8x8 block means of every image of a small default cohort per older kind (shape and stored values),
#: written from the renders the demo's benchmark numbers were measured on.
DEFAULT_RENDER = Path(__file__).with_name("default_render.json")


def _block_means(px: np.ndarray) -> np.ndarray:
    rows, cols = np.array_split(np.arange(px.shape[0]), 8), np.array_split(np.arange(px.shape[1]), 8)
    return np.array([[px[np.ix_(r, c)].astype(np.float64).mean() for c in cols] for r in rows])


def test_default_render_is_unchanged() -> None:
    """The default cohort (tag, far) and the older kinds render as before the kinds and placements were
    added: the demo's benchmark numbers were measured on these pixels. Compared as 8x8 block means within
    2 stored values, not as a byte digest: another CPU's vectorized float functions round the last bit
    differently and move a few pixels by 1 (a digest of the same code failed on an AMD EPYC machine),
    while a changed drawing (a cue moved, a tone curve changed) moves block means by 50 or more."""
    golden = json.loads(DEFAULT_RENDER.read_text())
    assert sorted(golden) == ["border", "marker", "tag", "text"]
    for kind, images in golden.items():
        cfg = _cfg(kind, "far", n=12, size=64, seed=0)
        items = plan_cohort(cfg)
        assert len(items) == len(images) == 12
        for item, want in zip(items, images, strict=True):
            px = render_item(item, cfg).pixels
            assert list(px.shape) == want["shape"], (kind, item.index)
            np.testing.assert_allclose(_block_means(px), want["blocks"], atol=2.0, rtol=0, err_msg=kind)


def test_the_render_check_sees_a_moved_cue() -> None:
    """The block-mean check is tight enough: the same images with the cue drawn near the lungs instead of
    far, or with another seed's noise, fail it."""
    golden = json.loads(DEFAULT_RENDER.read_text())["tag"]
    for cfg in (_cfg("tag", "near", n=12, size=64, seed=0), _cfg("tag", "far", n=12, size=64, seed=1)):
        renders = [render_item(item, cfg).pixels for item in plan_cohort(cfg)]
        worst = max(
            float(np.abs(_block_means(px) - np.array(want["blocks"])).max())
            for px, want in zip(renders, golden, strict=True)
            if list(px.shape) == want["shape"]
        )
        assert worst > 20.0, worst


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_draws_only_outside_the_dilated_lungs(kind: str, placement: str) -> None:
    """Rendered with and without the cue: every changed pixel lies in the footprint, and the footprint
    lies outside the dilated lung mask."""
    cfg = _cfg(kind, placement, n=12, size=96, seed=4)
    for item in plan_cohort(cfg)[::2]:
        with_cue = render_item(replace(item, cue=True), cfg)
        without = render_item(replace(item, cue=False), cfg)
        fp = with_cue.cue_footprint
        allowed = cue_allowed(with_cue.lung)
        changed = with_cue.presentation != without.presentation
        assert fp.sum() >= 30, (kind, placement, item.index, int(fp.sum()))
        assert changed.sum() >= 0.3 * fp.sum()
        assert not (fp & ~allowed).any()
        assert not (changed & ~fp).any()
        assert not without.cue_footprint.any()
        assert np.array_equal(with_cue.lung, without.lung)


@pytest.mark.parametrize("kind", KINDS)
def test_near_placement_hugs_the_lungs(kind: str) -> None:
    """Near: closer to the lungs than far on average, and touching the band just outside the dilated
    mask; far: nothing within that band except for kinds that cover whole edges."""
    size = 128
    margin, gap = max(2, size // 50), max(2, size // 40)
    mean: dict[str, float] = {}
    for placement in PLACEMENTS:
        cfg = _cfg(kind, placement, n=12, size=size, seed=6)
        dists = []
        for item in plan_cohort(cfg)[::2]:
            r = render_item(replace(item, cue=True), cfg)
            d = ndimage.distance_transform_edt(~r.lung)[r.cue_footprint]
            dists.append(float(d.mean()))
            if placement == "near":
                assert d.min() <= margin + 2 * gap + 1, (kind, item.index, float(d.min()))
        mean[placement] = float(np.mean(dists))
    assert mean["near"] < 0.8 * mean["far"], (kind, mean)


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("kind", KINDS)
def test_cue_follows_the_label_as_set(kind: str, placement: str) -> None:
    """200 images at one correlated site, strength 0.8: the drawn cue's phi with the label is ~0.6."""
    base = SynthConfig()
    cfg = _cfg(kind, placement, n=200, size=64, seed=1, sites=base.sites[:1])
    cfg = cfg.model_copy(update={"shortcut": cfg.shortcut.model_copy(update={"strength": 0.8})})
    positive, drawn = [], []
    for item in plan_cohort(cfg):
        r = render_item(item, cfg)
        positive.append(item.positive)
        drawn.append(bool(r.cue_footprint.any()))
        assert drawn[-1] == item.cue
    assert abs(phi_coefficient(positive, drawn) - (2 * 0.8 - 1)) < 0.15


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("kind", KINDS)
def test_cohort_json_records_kind_placement_and_phi(tmp_path: Path, kind: str) -> None:
    placement = "near" if KINDS.index(kind) % 2 else "far"
    cfg = _cfg(kind, placement, n=18, size=64, seed=2, workers=1)
    info = generate_cohort(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "cohort.json").read_text()) == info
    assert info["shortcut"]["kind"] == kind and info["shortcut"]["placement"] == placement
    assert info["config"]["shortcut"]["kind"] == kind
    assert info["shortcut"]["cue_pixels_inside_lungs"] == 0
    truth = _rows(tmp_path / "truth.csv")
    for site in info["sites"]:
        rows = [t for t in truth if t["site"] == site["name"]]
        pos = [t["label"] != info["negative_class"] for t in rows]
        cue = [bool(int(t["cue_present"])) for t in rows]
        assert site["cue_label_phi"] == pytest.approx(phi_coefficient(pos, cue))
    for t in truth:
        assert (int(t["cue_pixels"]) > 0) == bool(int(t["cue_present"])), t["path"]


def test_unknown_kind_or_placement_fails_clearly() -> None:
    with pytest.raises(ValidationError, match="kind"):
        ShortcutConfig(kind="halo")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="placement"):
        ShortcutConfig(placement="inside")  # type: ignore[arg-type]
    p, allowed = np.zeros((16, 16), np.float32), np.ones((16, 16), bool)
    with pytest.raises(ValueError, match=r"unknown shortcut kind 'halo'.*known"):
        draw_shortcut("halo", p, allowed, np.random.default_rng(0), "X")
    with pytest.raises(ValueError, match="unknown shortcut placement 'inside'"):
        draw_shortcut("tag", p, allowed, np.random.default_rng(0), "X", "inside")


def test_cli_shortcut_options(tmp_path: Path) -> None:
    args = ["synth", "--out", str(tmp_path / "c"), "--n", "12", "--size", "64", "--workers", "1"]
    res = CliRunner().invoke(app, [*args, "--shortcut", "device", "--shortcut-placement", "near"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "c" / "cohort.json").read_text())
    assert (info["shortcut"]["kind"], info["shortcut"]["placement"]) == ("device", "near")
    res = CliRunner().invoke(app, [*args, "--shortcut", "halo"])
    assert res.exit_code == 2 and "kind" in res.output


def test_shortcut_gallery(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["synth", "--shortcut-gallery", str(tmp_path / "g.png"), "--size", "64"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g.png").stat().st_size > 10_000
