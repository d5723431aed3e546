"""Fixtures for the offline deployment checks: every kustomize overlay rendered once per session, from a
copy of ``k8s/`` as a fresh clone has it (no git-ignored file, so no secret, can be needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.manifests import OVERLAYS, Manifest, render, source_tree


@pytest.fixture(scope="session")
def k8s_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_tree(tmp_path_factory.mktemp("clone"))


@pytest.fixture(scope="session")
def rendered(k8s_clone: Path) -> dict[str, list[Manifest]]:
    """``{"base" | "serving" | overlay: manifests}``."""
    out = {name: render(k8s_clone / "overlays" / name) for name in OVERLAYS}
    out["base"] = render(k8s_clone / "base")
    out["serving"] = render(k8s_clone / "serving")
    return out


@pytest.fixture(params=OVERLAYS)
def overlay(
    request: pytest.FixtureRequest, rendered: dict[str, list[Manifest]]
) -> tuple[str, list[Manifest]]:
    """Each deployable overlay: ``(name, manifests)``."""
    return request.param, rendered[request.param]
