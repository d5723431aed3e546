"""Phantom parts: disease stays inside the lungs, difficulty works, registries fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from isnetflow.config import Settings, SiteProfile, SynthConfig
from isnetflow.synth.anatomy import render_anatomy, sample_anatomy
from isnetflow.synth.cues import CUES, SHORTCUTS, draw_cue, draw_shortcut
from isnetflow.synth.disease import PAINTERS, paint


@pytest.fixture
def rendered():  # type: ignore[no-untyped-def]
    return render_anatomy(sample_anatomy(np.random.default_rng(1)), 160, 144)


@pytest.mark.parametrize("name", sorted(PAINTERS))
def test_disease_only_inside_lungs(rendered, name: str) -> None:  # type: ignore[no-untyped-def]
    lesion = paint(name, rendered, np.random.default_rng(2), 0.3, 0.8)
    assert lesion.shape == rendered.lung.shape
    assert np.all(lesion[rendered.lung_soft == 0] == 0)
    assert (lesion.sum() > 0) == (name != "normal")


def test_difficulty_lowers_lesion_signal(rendered) -> None:  # type: ignore[no-untyped-def]
    def mean_signal(d: float) -> float:
        return float(
            np.mean([paint("covid", rendered, np.random.default_rng(s), d, 0.5).sum() for s in range(20)])
        )

    assert mean_signal(0.0) > 2.5 * mean_signal(1.0) > 0


def test_lung_mask_is_two_lungs_left_and_right(rendered) -> None:  # type: ignore[no-untyped-def]
    from scipy import ndimage

    lab, n = ndimage.label(rendered.lung)
    assert n == 2
    cols = [np.nonzero(lab == k)[1].mean() for k in (1, 2)]
    w = rendered.lung.shape[1]
    assert min(cols) < w / 2 < max(cols)


@pytest.mark.parametrize("name", sorted(CUES))
def test_site_cues_respect_allowed_region(name: str) -> None:
    p = np.full((128, 128), 0.5, dtype=np.float32)
    allowed = np.ones_like(p, dtype=bool)
    allowed[30:100, 20:110] = False
    before = p.copy()
    fp = draw_cue(name, p, allowed, np.random.default_rng(0), "SITE TEXT")
    assert fp.any()
    assert np.array_equal(p[~allowed], before[~allowed])


@pytest.mark.parametrize("name", sorted(SHORTCUTS))
def test_shortcut_kinds_draw_outside_forbidden(name: str) -> None:
    p = np.full((128, 128), 0.5, dtype=np.float32)
    allowed = np.ones_like(p, dtype=bool)
    allowed[40:, :] = False
    before = p.copy()
    fp = draw_shortcut(name, p, allowed, np.random.default_rng(0), "PORTABLE")
    assert fp.any() and not (fp & ~allowed).any()
    assert np.array_equal(p[~allowed], before[~allowed])


def test_unknown_names_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown cue 'nope'"):
        draw_cue("nope", np.zeros((8, 8), np.float32), np.ones((8, 8), bool), np.random.default_rng(0), "")
    r = render_anatomy(sample_anatomy(np.random.default_rng(1)), 64, 64)
    with pytest.raises(ValueError, match="unknown class"):
        paint("flu", r, np.random.default_rng(0), 0.5, 0.5)


def test_config_validation_and_yaml(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = SiteProfile(name="A", role="internal", shortcut_mode="correlated")
    with pytest.raises(ValueError, match="unique"):
        SynthConfig(sites=[s, s])
    with pytest.raises(ValueError, match="internal"):
        SynthConfig(sites=[SiteProfile(name="B", role="external", shortcut_mode="anti")])
    y = tmp_path / "c.yaml"
    y.write_text("synth:\n  n: 12\n  shortcut: {strength: 0.9}\n")
    st = Settings.load(y)
    assert st.synth.n == 12 and st.synth.shortcut.strength == 0.9 and len(st.synth.sites) == 6
    y.write_text("synth:\n  nn: 12\n")
    with pytest.raises(ValueError, match="nn"):
        Settings.load(y)
    # Round trip through YAML keeps every value.
    y.write_text(st.to_yaml())
    assert Settings.load(y) == st


def test_three_class_cohort() -> None:
    from isnetflow.synth import plan_cohort

    cfg = SynthConfig(n=60, classes=["normal", "covid", "pneumonia"], seed=1)
    labels = {p.label for p in plan_cohort(cfg)}
    assert labels == {"normal", "covid", "pneumonia"}
