"""hadolint and checkov on the Dockerfile and the rendered overlays: zero findings, every skip justified.

The tools run from the deployment-tool venv (``make tools``, locked by constraints-tools.txt). Each check is
paired with a deliberately broken input, to show that the tool really runs and reports.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.manifests import ALLOWED_K8S_SKIPS, REPO, Manifest, checkov, failures, tool

DOCKERFILE = REPO / "Dockerfile"


def hadolint(dockerfile: Path, tmp_path: Path) -> list[dict[str, Any]]:
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")  # an explicit empty config: no repository or user-level ignores
    args = ["--config", str(config), "--format", "json", "--failure-threshold", "style", str(dockerfile)]
    proc = subprocess.run(
        [str(tool("hadolint")), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    findings: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    assert (proc.returncode == 0) == (not findings), proc.stderr
    return findings


# -- hadolint --------------------------------------------------------------------------------------------


def test_hadolint_dockerfile(tmp_path: Path) -> None:
    assert not re.search(r"hadolint\s+ignore", DOCKERFILE.read_text())
    assert not list(REPO.glob(".hadolint.y*ml"))
    assert hadolint(DOCKERFILE, tmp_path) == []


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install requests\n"
    )
    codes = {f["code"] for f in hadolint(bad, tmp_path)}
    assert {"DL3007", "DL3008", "DL3013"} <= codes


# -- checkov ---------------------------------------------------------------------------------------------


def test_checkov_dockerfile() -> None:
    results = checkov(DOCKERFILE, "dockerfile")
    assert failures(results) == []
    assert results["skipped_checks"] == []
    assert len(results["passed_checks"]) > 20


def test_checkov_rendered_overlays(rendered: dict[str, list[Manifest]], tmp_path: Path) -> None:
    for name in ("dev", "production"):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(rendered[name]))
    results = checkov(tmp_path, "kubernetes")
    assert failures(results) == []
    assert len(results["passed_checks"]) > 300
    for skip in results["skipped_checks"]:
        assert skip["check_id"] in ALLOWED_K8S_SKIPS, skip["check_id"]
        reason = skip["check_result"].get("suppress_comment", "")
        assert len(reason) > 40, f"{skip['check_id']} on {skip['resource']} skipped without a reason"


def test_checkov_reports_an_insecure_manifest(rendered: dict[str, list[Manifest]], tmp_path: Path) -> None:
    """Drop MLflow's hardening (and its skip annotations) and checkov must fail it."""
    mlflow = next(d for d in rendered["dev"] if d["kind"] == "Deployment")
    bad: dict[str, Any] = json.loads(json.dumps(mlflow))
    bad["metadata"].pop("annotations", None)
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True}
    container.pop("livenessProbe")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    failed = {c["check_id"] for c in checkov(tmp_path, "kubernetes")["failed_checks"]}
    # privileged, privilege escalation, liveness probe, digest
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_8", "CKV_K8S_43"} <= failed


# -- image build context -----------------------------------------------------------------------------------


def test_dockerignore_admits_only_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "deny by default"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for line in DOCKERFILE.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            copied |= {p.rstrip("/") for p in parts[1:-1] if not p.startswith("--")}
    assert admitted == copied


def test_dockerfile_server_pins_match_the_lock() -> None:
    """The MLflow server's extra packages, installed by the Dockerfile, have the lock's versions."""
    lock = {
        name.lower(): version
        for name, _, version in (
            line.partition("==") for line in (REPO / "constraints.txt").read_text().splitlines()
        )
        if version
    }
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', DOCKERFILE.read_text()))
    assert {"psycopg2-binary", "Flask-WTF"} <= set(pins)
    for name, version in pins.items():
        if name != "pip":
            assert lock[name.lower()] == version, name
