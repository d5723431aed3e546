"""Package-level rules: the domain package never imports kfp; the layers import downwards only (no stage
imports a sibling stage); the CLI exposes --help everywhere."""

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


#: The layers of src/isnetflow, lowest first; a module may import its own layer and the layers below.
#: Every other top-level module or package is the domain layer (config, dicom, validation, synth, masks,
#: lrp, isnet, nets, training, audit, evaluation, viz, ...).
LAYERS = {"registry": 1, "stages": 2, "tasks": 3, "cli": 4, "bench": 4}


def _imports(py: Path) -> list[str]:
    """Every isnetflow module ``py`` imports, at module level or inside a function (absolute names)."""
    parts = list(py.relative_to(SRC.parent).with_suffix("").parts)
    package = parts if py.name == "__init__.py" else parts[:-1]
    found = []
    for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(x for x in (base, node.module or "") if x)
            found += [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [m for m in found if m.startswith("isnetflow.")]


def _layer_of(module: str) -> tuple[str, int]:
    top = module.split(".")[1]
    return top, LAYERS.get(top, 0)


def test_imports_run_downwards_and_no_stage_imports_another() -> None:
    """Shared helpers live below the stages (the data loading in training/, MLflow plumbing in registry/,
    the per-file checks in validation/, ...): a stage never imports a sibling stage, and no module
    imports a layer above its own, not even inside a function."""
    upward, sibling = [], []
    for py in SRC.rglob("*.py"):
        here = ".".join(py.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        if here == "isnetflow":
            continue
        top, rank = _layer_of(here)
        for target in _imports(py):
            other, other_rank = _layer_of(target)
            if other_rank > rank:
                upward.append(f"{here} -> {target}")
            if top == other == "stages" and here != "isnetflow.stages":
                stage, imported = here.split(".")[2], target.split(".")[2:3]
                if imported and imported[0] != stage and (SRC / "stages" / f"{imported[0]}.py").exists():
                    sibling.append(f"{here} -> {target}")
    assert sibling == []
    assert upward == []


def test_the_layering_check_sees_a_function_local_import() -> None:
    py = SRC / "stages" / "ingest.py"
    assert "isnetflow.synth.generate_cohort" in _imports(py)  # imported inside ``run``


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
