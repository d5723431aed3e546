"""``isnetflow bench inference``: the served predict path of an ISNet- and a standard-trained network."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from isnetflow.bench.inference import _inner_calls, _time, _trained, bench_inference
from isnetflow.cli import app


def test_bench_inference_json_shape_on_a_tiny_network() -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "inference", "--json", "--model", "cnn-small", "--batch", "2", "--image-size", "32",
         "--threads", "1", "--repeats", "3", "--min-sample-s", "0.01"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["model"] == "cnn-small" and figures["batch"] == 2 and figures["image_size"] == 32
    for key in ("isnet_images_per_s", "standard_images_per_s", "explain_images_per_s"):
        assert figures[key] > 0, key
    # the ratio is the median of the per-round ratios: inside their interquartile range, not a constant
    q1, q3 = figures["ratio_iqr"]
    assert q1 <= figures["isnet_over_standard_ratio"] <= q3
    assert figures["calls_per_sample"] >= 1 and figures["repeats"] == 3


def test_a_sample_is_calibrated_to_last_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock: every call takes exactly 4 ms, so the calibration is exact."""
    from isnetflow.bench import inference

    clock = [0.0]
    calls = []

    def call() -> None:
        calls.append(1)
        clock[0] += 0.004

    monkeypatch.setattr(inference.time, "perf_counter", lambda: clock[0])
    assert _inner_calls(call, 0.05) == 13  # ceil(0.05 / 0.004)
    assert _inner_calls(call, 0.0) == 1
    assert _time(call, 4) == pytest.approx(0.004) and len(calls) == 3 + 3 + 4


def test_the_two_networks_share_the_graph_but_not_the_weights() -> None:
    """Same architecture, different training: the ISNet one went through the production ISNet objective."""
    isnet = _trained("cnn-small", "isnet", 32, steps=1, seed=0)
    standard = _trained("cnn-small", "standard", 32, steps=1, seed=1)
    a, b = isnet.state_dict(), standard.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert any(not np.allclose(a[k].numpy(), b[k].numpy()) for k in a if a[k].is_floating_point())
    assert not isnet.training and not standard.training


def test_bench_inference_without_explanations() -> None:
    figures = bench_inference(
        model="cnn-small", batch=2, image_size=32, threads=1, repeats=1, explain=False, min_sample_s=0.0
    )
    assert "explain_images_per_s" not in figures and figures["isnet_images_per_s"] > 0
