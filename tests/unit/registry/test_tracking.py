"""The MLflow store: one resolver (explicit > $MLFLOW_TRACKING_URI > the command's local default), called at
the edge (commands, tasks) and passed down; nothing but registry/tracking.py points MLflow at a store."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.registry.tracking import DEFAULT_HOME, ENV_VAR, resolve_tracking_uri, scoped_tracking

SRC = Path(__file__).resolve().parents[3] / "src" / "isnetflow"
TRACKING = SRC / "registry" / "tracking.py"


def _store(home: Path) -> str:
    return f"sqlite:///{home.resolve() / 'mlflow.db'}"


# --------------------------------------------------------------------------------------------------
# The resolver
# --------------------------------------------------------------------------------------------------


def test_explicit_beats_the_environment_and_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "http://env:5000")
    assert resolve_tracking_uri("http://explicit:5000", tmp_path / "home") == "http://explicit:5000"
    assert resolve_tracking_uri("http://explicit:5000", None) == "http://explicit:5000"
    assert not (tmp_path / "home").exists()  # nothing created when the default is not used


def test_the_environment_beats_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "http://env:5000")
    assert resolve_tracking_uri(None, tmp_path / "home") == "http://env:5000"
    assert resolve_tracking_uri("", tmp_path / "home") == "http://env:5000"  # "" = not given (KFP parameter)
    assert resolve_tracking_uri(None, None) == "http://env:5000"
    assert not (tmp_path / "home").exists()


def test_the_default_is_a_sqlite_store_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_tracking_uri(None, tmp_path / "home") == _store(tmp_path / "home")
    assert (tmp_path / "home").is_dir()
    monkeypatch.setenv(ENV_VAR, "")  # an empty variable counts as unset
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == _store(tmp_path / DEFAULT_HOME) == _store(tmp_path / ".isnetflow")
    assert resolve_tracking_uri("", None) is None  # no local default: nothing named, no store


def test_scoped_tracking_resolves_none_and_restores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import mlflow

    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    with scoped_tracking(None) as client:
        assert mlflow.get_tracking_uri() == client.tracking_uri == _store(tmp_path / ".isnetflow")
    assert ENV_VAR not in os.environ  # mlflow.set_tracking_uri also sets the variable: put back


# --------------------------------------------------------------------------------------------------
# One way to point MLflow at a store
# --------------------------------------------------------------------------------------------------


def _offences(path: Path) -> list[str]:
    """``set_tracking_uri`` named in any way (call, attribute, import) and ``$MLFLOW_TRACKING_URI`` read
    from the environment (``os.environ.get/[]``, ``os.getenv``) in one module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "set_tracking_uri":
            found.append(f"{node.lineno}: .set_tracking_uri")
        elif isinstance(node, ast.Name) and node.id == "set_tracking_uri":
            found.append(f"{node.lineno}: set_tracking_uri")
        elif isinstance(node, ast.ImportFrom) and any(a.name == "set_tracking_uri" for a in node.names):
            found.append(f"{node.lineno}: import of set_tracking_uri")
        elif isinstance(node, ast.Call | ast.Subscript):
            args = node.args if isinstance(node, ast.Call) else [node.slice]
            target = ast.unparse(node.func if isinstance(node, ast.Call) else node.value)
            if target in {
                "os.environ.get",
                "os.getenv",
                "os.environ",
                "environ.get",
                "getenv",
                "environ",
            } and any(isinstance(a, ast.Constant) and a.value == ENV_VAR for a in args):
                found.append(f"{node.lineno}: reads ${ENV_VAR}")
    return found


def test_only_registry_tracking_sets_the_tracking_uri() -> None:
    offences = {
        str(path.relative_to(SRC)): found
        for path in sorted(SRC.rglob("*.py"))
        if path != TRACKING and (found := _offences(path))
    }
    assert offences == {}, (
        "point MLflow at a store with isnetflow.registry.tracking (use_tracking / scoped_tracking) and "
        f"resolve it with resolve_tracking_uri, not by hand: {offences}"
    )


def test_the_check_sees_each_way(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\nimport mlflow\nfrom mlflow import set_tracking_uri\n"
        "mlflow.set_tracking_uri('x')\nset_tracking_uri('x')\n"
        "os.environ.get('MLFLOW_TRACKING_URI')\nos.environ['MLFLOW_TRACKING_URI']\nos.getenv('MLFLOW_TRACKING_URI')\n"
    )
    assert sorted(int(line.split(":")[0]) for line in _offences(bad)) == [3, 4, 5, 6, 7, 8]
    assert _offences(TRACKING)  # the one module allowed to


# --------------------------------------------------------------------------------------------------
# Each command resolves its store at the edge, with its own documented default
# --------------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised by the stubbed stage: the command got as far as calling it."""


def _capture(monkeypatch: pytest.MonkeyPatch, target: str, key: str = "tracking_uri") -> dict[str, Any]:
    """Replace ``target`` (module:function) by a stub that records its ``key`` argument and stops."""
    import importlib

    module, name = target.split(":")
    seen: dict[str, Any] = {}

    def stub(*args: Any, **kwargs: Any) -> Any:
        seen["uri"] = kwargs[key]
        raise _Stop

    monkeypatch.setattr(importlib.import_module(module), name, stub)
    return seen


@pytest.fixture
def no_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $MLFLOW_TRACKING_URI, the working directory in tmp_path."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert isinstance(result.exception, _Stop), result.output


def test_commands_default_to_the_local_store(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _store(no_env / ".isnetflow")
    seen = _capture(monkeypatch, "isnetflow.stages.promote:show")
    _invoke("registry", "show")
    assert seen["uri"] == local
    seen = _capture(monkeypatch, "isnetflow.stages.promote:rollback")
    _invoke("promote", "--rollback")
    assert seen["uri"] == local
    seen = _capture(monkeypatch, "isnetflow.stages.train:run")
    _invoke("train", "--data", str(no_env))
    assert seen["uri"] == local
    seen = _capture(monkeypatch, "isnetflow.stages.evaluate:run")
    _invoke("evaluate", "--model", "models:/m/1", "--data", str(no_env))
    assert seen["uri"] == local  # an MLflow model needs a store: the local one


def test_commands_with_their_own_default(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _capture(monkeypatch, "isnetflow.stages.segmenter:train")
    _invoke("train-segmenter", "--images", "i", "--masks", "m", "--out", "seg")
    assert seen["uri"] == _store(no_env / "seg")  # under --out
    seen = _capture(monkeypatch, "isnetflow.bench.seeds:seed_study")
    _invoke("bench", "seeds", "--workdir", "bw")
    assert seen["uri"] == _store(no_env / "bw")  # under --workdir
    seen = _capture(monkeypatch, "isnetflow.stages.masks:segment_files")
    _invoke("segment", "--input", "x.png", "--out", "o")
    assert seen["uri"] is None  # no default: only an MLflow --model needs one, and says so
    seen = _capture(monkeypatch, "isnetflow.stages.evaluate:run")
    _invoke("evaluate", "--model", "model.pt", "--data", str(no_env))
    assert seen["uri"] is None  # a local model is not tracked unless a store is named
    assert not (no_env / ".isnetflow").exists()


def test_commands_take_the_environment_then_the_option(no_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "http://env:5000")
    for command, target in (
        (["registry", "show"], "isnetflow.stages.promote:show"),
        (["segment", "--input", "x.png", "--out", "o"], "isnetflow.stages.masks:segment_files"),
        (["evaluate", "--model", "model.pt", "--data", "d"], "isnetflow.stages.evaluate:run"),
        (["train-segmenter", "--images", "i", "--masks", "m"], "isnetflow.stages.segmenter:train"),
    ):
        seen = _capture(monkeypatch, target)
        _invoke(*command)
        assert seen["uri"] == "http://env:5000", command
        _invoke(*command, "--tracking-uri", "http://option:5000")
        assert seen["uri"] == "http://option:5000", command
