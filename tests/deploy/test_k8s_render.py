"""Every kustomize overlay renders without a cluster and validates against the Kubernetes schemas (strict)."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest

from tests.deploy.manifests import K8S, K8S_VERSION, NAMESPACE, OVERLAYS, Manifest, by_kind, render

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}


def schema_errors(docs: list[Manifest]) -> list[str]:
    errors = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
    return errors


def test_every_kustomization_is_rendered_by_a_test() -> None:
    dirs = {p.parent.relative_to(K8S).as_posix() for p in K8S.rglob("kustomization.yaml")}
    assert dirs == {"base", "serving", *(f"overlays/{o}" for o in OVERLAYS)}  # serving: test_kserve.py


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_renders_into_the_namespace(rendered: dict[str, list[Manifest]], name: str) -> None:
    docs = rendered[name]
    assert len(docs) >= 15
    by_id = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(by_id) == len(set(by_id)), "duplicate objects"
    for doc in docs:
        if doc["kind"] in CLUSTER_SCOPED:
            continue
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "isnetflow"
    assert by_kind(docs, "Namespace").keys() == {NAMESPACE}


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_strict_schema_validation(rendered: dict[str, list[Manifest]], name: str) -> None:
    assert schema_errors(rendered[name]) == []


def test_schema_validation_catches_a_misspelled_field(rendered: dict[str, list[Manifest]]) -> None:
    """The check above is live: one typo in a container's securityContext fails it."""
    docs = copy.deepcopy(rendered["dev"])
    mlflow = by_kind(docs, "Deployment")["mlflow"]
    csc = mlflow["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    csc["readOnlyRootFileSystem"] = csc.pop("readOnlyRootFilesystem")
    errors = schema_errors(docs)
    assert len(errors) == 1
    assert "readOnlyRootFileSystem" in errors[0]


def test_kustomize_failure_is_reported(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(AssertionError, match="kustomize failed"):
        render(tmp_path)
