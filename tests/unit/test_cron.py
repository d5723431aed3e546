"""KFP's six-field cron expressions: valid forms pass (normalized), anything else names the problem."""

from __future__ import annotations

import pytest

from isnetflow.cron import CronError, validate_cron


@pytest.mark.parametrize(
    ("expr", "normalized"),
    [
        ("0 0 2 * * 0", "0 0 2 * * 0"),
        ("  0  30 */6 * * *  ", "0 30 */6 * * *"),
        ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"),  # kfp's docstring example
        ("0 0 3 1,15 JAN-jun ?", "0 0 3 1,15 JAN-jun ?"),
        ("59 59 23 31 12 SAT", "59 59 23 31 12 SAT"),
        ("0 5/15 0-4 * * MON,WED", "0 5/15 0-4 * * MON,WED"),
    ],
)
def test_valid(expr: str, normalized: str) -> None:
    assert validate_cron(expr) == normalized


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", "has 0 field(s)"),
        ("@weekly", "has 1 field(s)"),
        ("0 2 * * 0", "has 5 field(s); Kubeflow Pipelines needs 6: second minute hour"),
        ("60 0 2 * * 0", "second field: 60 is outside 0-59"),
        ("0 0 2 0 * 0", "day-of-month field: 0 is outside 1-31"),
        ("0 0 2 * 13 0", "month field: 13 is outside 1-12"),
        ("0 0 2 * * 7", "day-of-week field: 7 is outside 0-6"),
        ("0 0 2 * * FUN", "day-of-week field: 'FUN' is not a number or a name"),
        ("0 0 2 * * 0/0", "step must be at least 1"),
        ("0 0 ? * * 0", "'?' is allowed only alone, in day-of-month or day-of-week"),
        ("0 0 2 L * 0", "day-of-month field: 'L' is not a number"),
        ("0 0 5-2 * * 0", "range '5-2' runs backwards"),
        ("0 0 2 * * 1#2", "day-of-week field: cannot read '1#2'"),
    ],
)
def test_invalid(expr: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        validate_cron(expr)
    assert message in str(info.value)
