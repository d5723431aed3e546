"""``isnetflow bench inference``: the served predict path of an ISNet- and a standard-trained network."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from isnetflow.bench.inference import _trained, bench_inference
from isnetflow.cli import app


def test_bench_inference_json_shape_on_a_tiny_network() -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "inference", "--json", "--model", "cnn-small", "--batch", "2", "--image-size", "32",
         "--threads", "1", "--repeats", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["model"] == "cnn-small" and figures["batch"] == 2 and figures["image_size"] == 32
    for key in ("isnet_images_per_s", "standard_images_per_s", "explain_images_per_s"):
        assert figures[key] > 0, key
    # the ratio is exactly the two medians' ratio, not a constant
    assert figures["isnet_over_standard_ratio"] == pytest.approx(
        figures["standard_batch_ms"] / figures["isnet_batch_ms"], rel=0.05
    )


def test_the_two_networks_share_the_graph_but_not_the_weights() -> None:
    """Same architecture, different training: the ISNet one went through the production ISNet objective."""
    isnet = _trained("cnn-small", "isnet", 32, steps=1, seed=0)
    standard = _trained("cnn-small", "standard", 32, steps=1, seed=1)
    a, b = isnet.state_dict(), standard.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert any(not np.allclose(a[k].numpy(), b[k].numpy()) for k in a if a[k].is_floating_point())
    assert not isnet.training and not standard.training


def test_bench_inference_without_explanations() -> None:
    figures = bench_inference(model="cnn-small", batch=2, image_size=32, threads=1, repeats=1, explain=False)
    assert "explain_images_per_s" not in figures and figures["isnet_images_per_s"] > 0
