"""The learning yardstick: when the training cross-entropy fell below 0.5 (isnetflow.artifacts.training)."""

from __future__ import annotations

from isnetflow.artifacts.training import learned_line, learning_milestones


def test_learning_milestones_judge_the_first_third_of_the_isnet_phase() -> None:
    """The defaults (40 epochs, 4 of warm-up): learned early means training CE < 0.5 by epoch 15."""
    curve = [0.69] * 40
    assert learning_milestones(curve, 4, 40) == {"ce_below_half_epoch": None, "learned_early": False}
    for epoch, early in ((4, True), (15, True), (16, False), (39, False)):
        c = [*curve[:epoch], 0.49, *curve[epoch + 1 :]]
        assert learning_milestones(c, 4, 40) == {"ce_below_half_epoch": epoch, "learned_early": early}
    # the warm-up does not count (the authors' raw warm-up learns the shortcut): from the phase's start
    c = [*curve[:3], 0.3, *curve[4:]]
    assert learning_milestones(c, 4, 40) == {"ce_below_half_epoch": None, "learned_early": False}
    assert learning_milestones([0.3] * 40, 4, 40) == {"ce_below_half_epoch": 4, "learned_early": True}
    # a longer warm-up moves the window with it; a missing value (no step) is skipped
    assert learning_milestones([None, 0.45, 0.6], 1, 3)["learned_early"] is True
    assert learning_milestones([None, 0.6, 0.45], 1, 3)["learned_early"] is False
    assert learning_milestones([0.6] * 10 + [0.4], 10, 40)["learned_early"] is True
    # no ISNet phase (the standard model, the lungs-only reference): only the epoch
    assert learning_milestones([0.6, 0.3], None, 2) == {"ce_below_half_epoch": 1, "learned_early": None}


def test_learned_line_is_the_tables_cell() -> None:
    assert learned_line(12, True) == "12 (early)"
    assert learned_line(20, False) == "20"
    assert learned_line(3, None) == "3"  # no ISNet phase: only the epoch
    assert learned_line(None, False) == "never"


def test_train_result_milestones_judge_the_schedule_not_the_epochs_run() -> None:
    """An early-stopped ISNet (10 of 40 epochs run) is judged against its 40-epoch schedule's first third."""
    from torch import nn

    from isnetflow.training.loop import TrainResult

    history = [{"train_ce": 0.69}] * 9 + [{"train_ce": 0.45}]
    result = TrainResult(nn.Identity(), history, 9, 0.9, 1.0, 1000.0, 100, 1.0, "cpu",
                         config={"epochs": 40}, isnet_start=4)  # fmt: skip
    assert result.milestones() == {"ce_below_half_epoch": 9, "learned_early": True}
    standard = TrainResult(nn.Identity(), history, 9, 0.9, None, None, 100, 1.0, "cpu", config={"epochs": 10})
    assert standard.milestones() == {"ce_below_half_epoch": 9, "learned_early": None}
