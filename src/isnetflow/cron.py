"""Cron expressions as Kubeflow Pipelines reads them: six fields, the first one seconds.

KFP's scheduler parses ``second minute hour day-of-month month day-of-week`` (robfig/cron). A usual
five-field crontab line would be read shifted by one field, so :func:`validate_cron` refuses anything
but six valid fields before a recurring run is created. ``'0 0 2 * * 0'`` is Sundays at 02:00:00.
"""

from __future__ import annotations

import re

__all__ = ["CRON_FIELDS", "CronError", "validate_cron"]


class CronError(ValueError):
    """The cron expression cannot be used (the message says which field and why)."""


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

#: (name, lowest, highest, names for the values from ``lowest`` on, ``?`` allowed)
CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...], bool], ...] = (
    ("second", 0, 59, (), False),
    ("minute", 0, 59, (), False),
    ("hour", 0, 23, (), False),
    ("day-of-month", 1, 31, (), True),
    ("month", 1, 12, _MONTHS, False),
    ("day-of-week", 0, 6, _DAYS, True),
)
_EXAMPLE = "e.g. '0 0 2 * * 0' = Sundays 02:00:00"
_PART = re.compile(r"^(?P<range>\*|\?|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/(?P<step>[0-9]+))?$")


def _value(token: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if token.isdigit():
        v = int(token)
    elif token.upper() in names:
        v = low + names.index(token.upper())
    else:
        raise CronError(f"{name} field: {token!r} is not a number" + (" or a name" if names else ""))
    if not low <= v <= high:
        raise CronError(f"{name} field: {v} is outside {low}-{high}")
    return v


def _check_field(text: str, spec: tuple[str, int, int, tuple[str, ...], bool]) -> None:
    name, low, high, names, question = spec
    for part in text.split(","):
        m = _PART.match(part)
        if m is None:
            raise CronError(f"{name} field: cannot read {part!r}")
        rng, step = m["range"], m["step"]
        if step is not None and int(step) < 1:
            raise CronError(f"{name} field: step must be at least 1 in {part!r}")
        if rng == "?":
            if not question or step is not None:
                raise CronError(f"{name} field: '?' is allowed only alone, in day-of-month or day-of-week")
            continue
        if rng == "*":
            continue
        first, _, last = rng.partition("-")
        a = _value(first, name, low, high, names)
        if last and _value(last, name, low, high, names) < a:
            raise CronError(f"{name} field: range {rng!r} runs backwards")


def validate_cron(expression: str) -> str:
    """The expression with normalized spacing, or :class:`CronError` unless it has 6 valid fields."""
    fields = expression.split()
    if len(fields) != len(CRON_FIELDS):
        order = " ".join(f[0] for f in CRON_FIELDS)
        raise CronError(
            f"cron {expression!r} has {len(fields)} field(s); Kubeflow Pipelines needs 6: "
            f"{order} ({_EXAMPLE})"
        )
    for text, spec in zip(fields, CRON_FIELDS, strict=True):
        _check_field(text, spec)
    return " ".join(fields)
