"""``isnetflow bench training --nproc 2``: the JSON a reader compares (images/s of 1 vs 2 processes)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from isnetflow.cli import app


@pytest.mark.slow  # four torchrun launches, about 35 s on 2 cores
def test_bench_training_nproc_reports_throughput_and_efficiency() -> None:
    args = ["bench", "training", "--nproc", "2", "--model", "cnn-small", "--batch", "4", "--image-size", "32",
            "--steps", "2", "--device", "cpu", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["nproc"] == 2 and figures["batch_per_process"] == 4
    for mode in ("standard", "isnet"):
        one, two = figures[mode]["one_process"], figures[mode]["2_processes"]
        assert one["backend"] is None and two["backend"] == "gloo"
        assert one["images_per_s"] > 0 and two["images_per_s"] > 0
        # 2 processes move 2 x batch images per step
        assert (
            two["images_per_s"] == round(8 / two["step_s"], 2)
            or abs(two["images_per_s"] * two["step_s"] - 8) < 0.1
        )
        expected = round(two["images_per_s"] / (2 * one["images_per_s"]), 3)
        assert figures[mode]["scaling_efficiency"] == expected
