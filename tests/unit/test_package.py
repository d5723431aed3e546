"""Package-level rules: the domain package never imports kfp; the layers import downwards only (no stage
imports a sibling stage); the kfp layer is installed under the project's name; the CLI exposes --help
everywhere."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from setuptools import find_namespace_packages
from setuptools.config.pyprojecttoml import read_configuration
from setuptools.discovery import find_package_path
from typer.testing import CliRunner

from isnetflow.cli import app

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "isnetflow"

#: The kfp layer as installed (components/ and pipelines/ of the repository), kfp itself, and the layer's
#: former top-level names, which must not come back.
KFP_LAYER = "isnetflow_kfp"
KFP_NAMES = {"kfp", KFP_LAYER, "components", "pipelines"}
#: Functions that import a module named by a string.
DYNAMIC_IMPORTS = {"import_module", "__import__"}


class _KfpImports(ast.NodeVisitor):
    """What one module of src/isnetflow imports of kfp or the kfp layer, as ``(line, name, offence)``.

    An import statement naming kfp or the kfp layer is an offence wherever it is, inside a function too.
    The one sanctioned way in is a lazy ``importlib.import_module("isnetflow_kfp....")`` inside a function
    of ``isnetflow.cli``; the same call at module level or outside cli/, one naming kfp or the old
    top-level packages, and one whose name is not a string literal (which this check cannot read) are
    offences."""

    def __init__(self, in_cli: bool) -> None:
        self.in_cli = in_cli
        self.depth = 0
        self.found: list[tuple[int, str, str | None]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _statement(self, node: ast.stmt, names: list[str]) -> None:
        for name in names:
            if name.split(".")[0] in KFP_NAMES:
                self.found.append((node.lineno, name, "import statement"))
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self._statement(node, [a.name for a in node.names])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._statement(node, [node.module] if node.module and not node.level else [])

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = (
            func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        )
        if called in DYNAMIC_IMPORTS:
            arg = node.args[0] if node.args else None
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                self.found.append((node.lineno, f"{called}(<computed name>)", "computed module name"))
            elif arg.value.split(".")[0] in KFP_NAMES:
                name, offence = arg.value, None
                if arg.value.split(".")[0] != KFP_LAYER:
                    offence = f"{called} of kfp or an old top-level name"
                elif not self.in_cli:
                    offence = f"{called} outside isnetflow.cli"
                elif self.depth == 0:
                    offence = f"{called} at module level"
                self.found.append((node.lineno, name, offence))
        self.generic_visit(node)


def _kfp_imports(source: str, in_cli: bool) -> list[tuple[int, str, str | None]]:
    visitor = _KfpImports(in_cli)
    visitor.visit(ast.parse(source))
    return visitor.found


def _src_kfp_imports() -> list[tuple[str, int, str, str | None]]:
    return [
        (str(py.relative_to(SRC)), line, name, offence)
        for py in sorted(SRC.rglob("*.py"))
        for line, name, offence in _kfp_imports(py.read_text(), py.relative_to(SRC).parts[0] == "cli")
    ]


def test_domain_package_never_imports_kfp() -> None:
    """No import statement of kfp or the kfp layer anywhere in src/isnetflow; the CLI loads the layer
    lazily, by name, inside its functions only."""
    offenders = [found for found in _src_kfp_imports() if found[3] is not None]
    assert offenders == []


def test_the_cli_loads_the_kfp_layer_by_its_installed_names() -> None:
    lazy = {name for _, _, name, offence in _src_kfp_imports() if offence is None}
    assert lazy == {f"{KFP_LAYER}.pipelines.local", f"{KFP_LAYER}.pipelines.remote"}
    for name in lazy:
        assert importlib.util.find_spec(name) is not None, name


@pytest.mark.parametrize(
    ("source", "in_cli", "offence"),
    [
        ("import kfp", True, "import statement"),
        ("def f():\n    from isnetflow_kfp.pipelines import local", True, "import statement"),
        ("def f():\n    import pipelines.local", True, "import statement"),
        ("import importlib\nimportlib.import_module('isnetflow_kfp.pipelines.local')", True, "module level"),
        (
            "from importlib import import_module\nimport_module('isnetflow_kfp.components')",
            True,
            "module level",
        ),
        ("def f():\n    return importlib.import_module('pipelines.local')", True, "old top-level name"),
        ("def f():\n    return importlib.import_module('kfp.dsl')", True, "old top-level name"),
        ("def f():\n    return __import__('isnetflow_kfp.pipelines.remote')", False, "outside isnetflow.cli"),
        ("def f(n):\n    return importlib.import_module(n)", True, "computed module name"),
        ("def f():\n    return importlib.import_module('isnetflow_kfp.pipelines.local')", True, None),
    ],
)
def test_the_kfp_check_sees_string_and_function_local_imports(
    source: str, in_cli: bool, offence: str | None
) -> None:
    (found,) = _kfp_imports(textwrap.dedent(source), in_cli)
    if offence is None:
        assert found[2] is None
    else:
        assert found[2] is not None and offence in found[2]


def test_the_kfp_layer_is_installed_under_the_project_name() -> None:
    """pyproject.toml's package list, as setuptools reads it: isnetflow (every package setuptools finds in
    src/) and the kfp layer as isnetflow_kfp.components / .pipelines, mapped onto the repository's
    components/ and pipelines/; nothing installs as a top-level ``components`` or ``pipelines``."""
    config = read_configuration(REPO / "pyproject.toml")["tool"]["setuptools"]
    packages, package_dir = config["packages"], config["package-dir"]
    assert {p.split(".")[0] for p in packages} == {"isnetflow", KFP_LAYER}
    found = find_namespace_packages(str(REPO / "src"), include=["isnetflow", "isnetflow.*"])
    assert sorted(p for p in packages if p.split(".")[0] == "isnetflow") == sorted(found)
    kfp_layer = {p: find_package_path(p, package_dir, str(REPO)) for p in packages if p.startswith(KFP_LAYER)}
    assert kfp_layer == {
        f"{KFP_LAYER}.components": str(REPO / "components"),
        f"{KFP_LAYER}.pipelines": str(REPO / "pipelines"),
    }
    assert all((Path(path) / "__init__.py").is_file() for path in kfp_layer.values())


def test_a_built_wheel_holds_only_the_project_packages_and_builds_without_warnings(tmp_path: Path) -> None:
    """A real wheel, built by pip from a copy of the sources (the repository stays untouched): its top-level
    entries are isnetflow, isnetflow_kfp and the dist-info, never a plain ``components`` or ``pipelines``;
    the kfp layer's modules are inside it; and the build prints no setuptools deprecation warning (the
    banner every ``make demo`` set-up used to show; ``-v`` shows setuptools' own output, where it appears)."""
    import zipfile

    src = tmp_path / "src-copy"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("src", "components", "pipelines"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    banners = [line for line in log.splitlines() if "deprecat" in line.lower() or "Warning:" in line]
    assert not banners, banners[:5]
    (wheel,) = (tmp_path / "dist").glob("isnetflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"isnetflow", KFP_LAYER}
    assert f"{KFP_LAYER}/components/__init__.py" in names and f"{KFP_LAYER}/pipelines/training.py" in names
    assert "isnetflow/synth/sites.yaml" in names  # the settings' default hospitals are package data
    assert not any(n.startswith(("components/", "pipelines/")) for n in names)


#: The layers of src/isnetflow, lowest first; a module may import its own layer and the layers below.
#: Every other top-level module or package is the domain layer (config, dicom, validation, synth, masks,
#: lrp, isnet, nets, training, audit, evaluation, viz, and the two rooms cluster/ and serving/, ...): so
#: the Kubernetes launchers and the served model never import the registry or a stage, and the registry
#: may use the served model's class (it logs it).
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


#: The rooms' client libraries: only cluster/ talks to the Kubernetes API, only serving/ loads MLServer.
ROOMS = {"kubernetes": "cluster", "mlserver": "serving", "mlserver_mlflow": "serving"}


def test_the_kubernetes_and_mlserver_clients_stay_in_their_rooms() -> None:
    stray = []
    for py in SRC.rglob("*.py"):
        here = py.relative_to(SRC).parts[0]
        for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            stray += [
                f"{py.relative_to(SRC)} -> {name}"
                for name in names
                if ROOMS.get(name.split(".")[0], here) != here
            ]
    assert stray == []


def test_the_layering_check_sees_a_function_local_import() -> None:
    py = SRC / "stages" / "ingest.py"
    assert "isnetflow.synth.generate_cohort" in _imports(py)  # imported inside ``run``


def test_importing_isnetflow_does_not_load_kfp() -> None:
    code = (
        "import sys, isnetflow.cli, isnetflow.config, isnetflow.synth; "
        "print(any(m.split('.')[0] in {'kfp', 'isnetflow_kfp'} for m in sys.modules))"
    )
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
