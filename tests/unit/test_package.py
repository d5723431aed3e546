"""Package-level rules: the domain package never imports kfp; the CLI exposes --help everywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from isnetflow.cli import app

SRC = Path(__file__).resolve().parents[2] / "src" / "isnetflow"


def test_domain_package_never_imports_kfp() -> None:
    offenders = []
    for py in SRC.rglob("*.py"):
        tree = ast.parse(py.read_text(), filename=str(py))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{py.relative_to(SRC)}: {n}"
                for n in names
                if n.split(".")[0] in {"kfp", "pipelines", "components"}
            ]
    assert offenders == []


def test_importing_isnetflow_does_not_load_kfp() -> None:
    code = "import sys, isnetflow.cli, isnetflow.config, isnetflow.synth; print('kfp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("cmd", [[], ["synth"], ["run"], ["bench"], ["bench", "synth"]])
def test_help(cmd: list[str]) -> None:
    res = CliRunner().invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_console_script_installed() -> None:
    exe = Path(sys.executable).parent / "isnetflow"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("isnetflow ")
