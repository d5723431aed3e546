"""The components are interfaces only: each calls one ``isnetflow.tasks`` function and copies its result
into the KFP outputs; the logic is tested on the plain functions (``tests/unit/test_tasks.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from isnetflow import tasks

COMPONENTS = Path(__file__).resolve().parents[2] / "components"
FILES = sorted(p for p in COMPONENTS.glob("*.py") if p.stem not in {"__init__", "image"})


def _component(py: Path) -> ast.FunctionDef:
    (fn,) = [n for n in ast.parse(py.read_text()).body if isinstance(n, ast.FunctionDef)]
    return fn


@pytest.mark.parametrize("py", FILES, ids=[p.stem for p in FILES])
def test_a_component_calls_its_task_and_nothing_else_of_isnetflow(py: Path) -> None:
    fn = _component(py)
    imported = [(n.module, a.name) for n in ast.walk(fn) if isinstance(n, ast.ImportFrom) for a in n.names]
    assert ("isnetflow", "tasks") in imported
    assert [m for m, _ in imported if m and m.startswith("isnetflow")] == ["isnetflow"]
    calls = [
        n.func.attr
        for n in ast.walk(fn)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "tasks"
    ]
    assert calls == [fn.name]  # one task, named like the component
    assert callable(getattr(tasks, fn.name))
    branches = sum(isinstance(n, ast.If | ast.Try | ast.While) for n in ast.walk(fn))
    assert branches <= 1  # only "publish the ROC curve when there is one"
    assert len(fn.body) <= 12, f"{py.name}: {len(fn.body)} statements; logic belongs in isnetflow.tasks"


def test_every_task_has_its_component() -> None:
    assert sorted(_component(p).name for p in FILES) == sorted(
        name for name in tasks.__all__ if callable(getattr(tasks, name)) and name[0].islower()
        and name != "read_json"
    )  # fmt: skip
