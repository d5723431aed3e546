"""The loop's parts: the typed state is the checkpoint format, the named random streams keep their seeds,
and each epoch's phase follows the recipe."""

from __future__ import annotations

import math

import pytest
import torch

from isnetflow.config import HeatmapLossConfig, TrainConfig
from isnetflow.training.phases import phase_of
from isnetflow.training.state import TrainState
from isnetflow.training.streams import STREAMS, RandomStreams, mix_seed


def test_the_state_round_trips_through_the_checkpoint_dict(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = TrainConfig(heatmap=HeatmapLossConfig(C1=None, C2=None))
    state = TrainState.start(cfg)
    assert (state.c1, state.c2, state.isnet_start, state.epoch) == (None, None, cfg.warmup_epochs, 0)
    state.epoch, state.global_step, state.best_epoch, state.best_auc = 3, 42, 2, 0.9
    state.best_state = {"w": torch.arange(3.0)}
    state.front.append({"epoch": 2, "auc": 0.9, "score": -0.9, "state": {"w": torch.ones(2)}})
    state.history.append({"epoch": 0, "val_auc": 0.5})
    state.epoch_sums = {"ce": 1.5}
    path = tmp_path / "ckpt.pt"
    torch.save({"state": state.as_checkpoint()}, path)
    back = TrainState.from_checkpoint(torch.load(path, weights_only=True)["state"], cfg)
    assert back.global_step == 42 and back.best_epoch == 2 and back.history == state.history
    assert torch.equal(back.best_state["w"], torch.arange(3.0))  # type: ignore[index]
    assert back.front[0]["epoch"] == 2 and torch.equal(back.front[0]["state"]["w"], torch.ones(2))
    assert back.epoch_sums == {"ce": 1.5} and math.isinf(back.best_score)


def test_an_older_checkpoint_state_reads_with_start_values_and_a_foreign_one_is_refused() -> None:
    cfg = TrainConfig(warmup_epochs=4, warmup_patience=2)
    old = {"epoch": 5, "step_in_epoch": 0, "global_step": 80, "best_auc": 0.8, "best_score": -0.8,
           "best_epoch": 4, "best_state": None, "bad_epochs": 0, "history": [], "c1": 1.0, "c2": 9.0,
           "stopped": False, "schedule_start": 0}  # fmt: skip
    state = TrainState.from_checkpoint(old, cfg)
    assert state.isnet_start == 4  # before the key existed the warm-up had a fixed length
    assert state.front == [] and state.epoch_sums == {} and state.global_step == 80
    with pytest.raises(ValueError, match="unknown keys"):
        TrainState.from_checkpoint({**old, "mystery": 1}, cfg)


def test_the_named_streams_keep_the_seeds_of_the_recorded_results() -> None:
    """The stream tags are part of every recorded result: the same seeds as the numbered streams of the
    bench tables (3 swap, 5 warm-up inputs, 7 heatmap classes, 11 calibration, 13 validation), per rank
    only where the stream is; 17, the teacher's context composites, came later and no default uses it)."""
    assert {name: tag for name, (tag, _) in STREAMS.items()} == {
        "swap": 3, "warmup_inputs": 5, "heatmap_classes": 7, "calibration": 11, "validation": 13,
        "teacher_context": 17,
    }  # fmt: skip
    assert mix_seed(7, 100, 3) == 1058169985  # the seed function itself is pinned
    one = RandomStreams(7)
    ranked = RandomStreams(7, rank=1)
    draw = lambda g: torch.rand(3, generator=g)  # noqa: E731
    assert torch.equal(
        draw(one.generator("swap", 100)), draw(torch.Generator().manual_seed(mix_seed(7, 100, 3)))
    )
    assert torch.equal(
        draw(ranked.generator("swap", 100)), draw(torch.Generator().manual_seed(mix_seed(7, 100, 3, 1)))
    )
    assert torch.equal(draw(ranked.generator("calibration", 16)), draw(one.generator("calibration", 16)))
    assert torch.equal(draw(one.epoch_order(2)), draw(torch.Generator().manual_seed(mix_seed(7, 2))))


def test_each_epoch_has_the_phase_of_the_recipe() -> None:
    cfg = TrainConfig(epochs=10, warmup_epochs=2, heatmap=HeatmapLossConfig(ramp_epochs=2))
    state = TrainState.start(cfg)
    phases = [phase_of(cfg, state, e) for e in range(5)]
    assert [p.name for p in phases] == ["warmup", "warmup", "isnet", "isnet", "isnet"]
    assert [p.heat_on for p in phases] == [False, False, True, True, True]
    assert [p.ramp for p in phases] == [1.0, 1.0, 0.5, 1.0, 1.0]
    assert [p.selectable for p in phases] == [False, False, True, True, True]
    assert not any(p.restart for p in phases)
    swap = cfg.model_copy(update={"relevance_loss": False, "warmup_restart": True})
    isnet2 = phase_of(swap, state, 2)
    assert isnet2.name == "isnet" and not isnet2.heat_on and isnet2.restart
    standard = cfg.model_copy(update={"mode": "standard", "background_fade_epochs": 4})
    assert phase_of(standard, state, 0).name == "standard" and phase_of(standard, state, 1).fade == 0.25
    waiting = TrainState.start(cfg.model_copy(update={"warmup_patience": 2}))
    assert phase_of(cfg, waiting, 7).name == "warmup"  # no end yet: still the warm-up
