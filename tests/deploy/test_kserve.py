"""k8s/serving and the InferenceService ``isnetflow registry kserve`` writes, checked offline.

Schemas: KServe's CRDs (vendored, strict) for the ServingRuntime and the InferenceService, the Kubernetes
schemas for the rest. Hardening and checkov: on the predictor Deployment KServe would build from the two
(``manifests.kserve_predictor``), since neither tool understands KServe's kinds.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from isnetflow import __version__
from isnetflow.cluster.kserve import ModelLocation, inference_service
from isnetflow.cluster.names import PREDICTOR_ACCOUNT, SERVING_RUNTIME
from tests.deploy.manifests import (
    ALLOWED_K8S_SKIPS,
    K8S_VERSION,
    NAMESPACE,
    Manifest,
    Pod,
    by_kind,
    checkov,
    crd_errors,
    failures,
    hardening_problems,
    ingress_allowed,
    kserve_predictor,
    one,
    selector_matches,
)
from tests.deploy.manifests import pod_labels as pod_labels_of

PROJECT_IMAGE = f"ghcr.io/isnetflow/isnetflow:{__version__}"
LOCATION = ModelLocation(
    name="cxr-isnet",
    version="3",
    alias="champion",
    run_id="0123456789abcdef0123456789abcdef",
    artifact_uri="mlflow-artifacts:/1/models/m-0123/artifacts",
)
STORAGE = "s3://mlflow-artifacts/1/models/m-0123/artifacts"


@pytest.fixture(scope="module")
def isvc() -> Manifest:
    return inference_service(LOCATION, STORAGE)


@pytest.fixture(scope="module")
def runtime(rendered: dict[str, list[Manifest]]) -> Manifest:
    return one(rendered["serving"], "ServingRuntime", SERVING_RUNTIME)


def test_serving_renders_into_the_namespace(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["serving"]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("NetworkPolicy", "cxr-predictor"),
        ("ServiceAccount", PREDICTOR_ACCOUNT),
        ("ServingRuntime", SERVING_RUNTIME),
    ]
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "isnetflow"
    (container,) = one(docs, "ServingRuntime", SERVING_RUNTIME)["spec"]["containers"]
    assert container["image"] == PROJECT_IMAGE  # kustomize's images transformer reached the runtime


def test_kserve_resources_validate_against_the_vendored_crds(runtime: Manifest, isvc: Manifest) -> None:
    assert crd_errors(runtime) == []
    assert crd_errors(isvc) == []


@pytest.mark.parametrize(
    ("which", "path", "typo"),
    [
        ("isvc", ("spec", "predictor", "model"), ("storageUri", "storageURI")),
        ("isvc", ("spec", "predictor"), ("securityContext", "securitycontext")),
        ("runtime", ("spec",), ("protocolVersions", "protocolVersion")),
        ("runtime", ("spec", "containers", 0, "securityContext"), ("runAsNonRoot", "runAsNonroot")),
    ],
)
def test_crd_validation_catches_a_misspelled_field(
    runtime: Manifest, isvc: Manifest, which: str, path: tuple[str | int, ...], typo: tuple[str, str]
) -> None:
    """The check above is live: one misspelled field, one error naming it."""
    doc = copy.deepcopy(isvc if which == "isvc" else runtime)
    node = doc
    for key in path:
        node = node[key]
    good, bad = typo
    node[bad] = node.pop(good)
    errors = crd_errors(doc)
    assert len(errors) == 1 and f"'{bad}' was unexpected" in errors[0], errors


def test_a_wrong_type_is_caught(isvc: Manifest) -> None:
    doc = copy.deepcopy(isvc)
    doc["spec"]["predictor"]["minReplicas"] = "one"
    assert any("minReplicas: 'one' is not of type 'integer'" in e for e in crd_errors(doc))


def test_kubernetes_kinds_validate_strictly(rendered: dict[str, list[Manifest]]) -> None:
    for doc in rendered["serving"]:
        if doc["kind"] != "ServingRuntime":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_inference_service_uses_this_runtime(runtime: Manifest, isvc: Manifest) -> None:
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == SERVING_RUNTIME and model["protocolVersion"] == "v2"
    assert model["storageUri"] == STORAGE
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
    assert "v2" in runtime["spec"]["protocolVersions"]
    # the server-type annotation is what makes KServe inject MLSERVER_MODEL_NAME / MLSERVER_MODEL_URI
    assert runtime["metadata"]["annotations"]["serving.kserve.io/server-type"] == "mlserver"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert annotations["isnetflow.io/model-version"] == "3"
    assert annotations["isnetflow.io/model-alias"] == "champion"


def test_the_runtime_class_exists(runtime: Manifest) -> None:
    (container,) = runtime["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    module, _, cls = env["MLSERVER_MODEL_IMPLEMENTATION"].rpartition(".")
    runtime_class = getattr(importlib.import_module(module), cls)
    assert runtime_class.__mro__[1].__name__ == "MLflowRuntime"
    assert container["command"] == ["mlserver", "start", "/mnt/models"]
    assert env["MLSERVER_HTTP_PORT"] == str(container["ports"][0]["containerPort"]) == "8080"


def test_the_predictor_pod_is_hardened(runtime: Manifest, isvc: Manifest) -> None:
    predictor = kserve_predictor(runtime, isvc)
    assert hardening_problems(predictor) == []
    (container,) = predictor["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"].startswith("/v2/health/"), probe
    # MLServer writes only to the /tmp volume (metrics, environments): the root filesystem is read-only
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLSERVER_METRICS_DIR"].startswith("/tmp/") and env["MLSERVER_ENVIRONMENTS_DIR"].startswith(
        "/tmp/"
    )
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    assert predictor["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_hardening_check_catches_a_root_predictor(runtime: Manifest, isvc: Manifest) -> None:
    bad = copy.deepcopy(isvc)
    del bad["spec"]["predictor"]["securityContext"]
    assert hardening_problems(kserve_predictor(runtime, bad)) == []  # the container's settings suffice
    bare_runtime = copy.deepcopy(runtime)
    del bare_runtime["spec"]["containers"][0]["securityContext"]
    problems = hardening_problems(kserve_predictor(bare_runtime, bad))
    assert {p.split(": ", 1)[1] for p in problems} >= {
        "runAsNonRoot",
        "seccomp RuntimeDefault",
        "readOnlyRootFilesystem",
    }
    bad = copy.deepcopy(isvc)
    del bad["spec"]["predictor"]["model"]["resources"]
    runtime_without = copy.deepcopy(runtime)
    del runtime_without["spec"]["containers"][0]["resources"]
    assert any("requests and limits" in p for p in hardening_problems(kserve_predictor(runtime_without, bad)))


def test_checkov_on_the_predictor(
    rendered: dict[str, list[Manifest]], runtime: Manifest, isvc: Manifest, tmp_path: Path
) -> None:
    """The predictor Deployment with the serving NetworkPolicy next to it (checkov pairs them)."""
    policies = [d for d in rendered["serving"] if d["kind"] == "NetworkPolicy"]
    (tmp_path / "predictor.yaml").write_text(yaml.safe_dump_all([kserve_predictor(runtime, isvc), *policies]))
    results = checkov(tmp_path, "kubernetes")
    assert failures(results) == []
    assert len(results["passed_checks"]) > 60
    for skip in results["skipped_checks"]:
        assert skip["check_id"] in ALLOWED_K8S_SKIPS, skip["check_id"]
        assert len(skip["check_result"].get("suppress_comment", "")) > 40


def test_only_labelled_clients_reach_the_predictor(
    rendered: dict[str, list[Manifest]], runtime: Manifest, isvc: Manifest
) -> None:
    policy = by_kind(rendered["serving"], "NetworkPolicy")["cxr-predictor"]
    pod_labels = kserve_predictor(runtime, isvc)["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(policy["spec"]["podSelector"], pod_labels)
    assert policy["spec"]["podSelector"]["matchLabels"]["isnetflow.io/serving"] == "champion"
    policies = [*by_kind(rendered["dev"], "NetworkPolicy").values(), policy]
    predictor = Pod(pod_labels)
    client = Pod({"isnetflow.io/inference-client": "true", "app.kubernetes.io/name": "ris-gateway"})
    assert ingress_allowed(policies, client, predictor, 8080)
    assert not ingress_allowed(policies, client, predictor, 9000)  # gRPC is not exposed
    assert not ingress_allowed(policies, Pod({"app.kubernetes.io/name": "mlflow"}), predictor, 8080)
    other_ns = Pod(
        {"app": "emr"}, namespace="hospital-it", namespace_labels={"isnetflow.io/inference-clients": "true"}
    )
    assert ingress_allowed(policies, other_ns, predictor, 8080)
    assert not ingress_allowed(policies, Pod({"app": "emr"}, namespace="default"), predictor, 8080)
    # the storage initializer (in the predictor pod) may read the dev overlay's MinIO
    minio = Pod(pod_labels_of(one(rendered["dev"], "StatefulSet", "minio")))
    assert ingress_allowed(policies, predictor, minio, 9000)


def test_the_service_account_has_no_token_and_the_s3_secret(rendered: dict[str, list[Manifest]]) -> None:
    sa = one(rendered["serving"], "ServiceAccount", PREDICTOR_ACCOUNT)
    assert sa["automountServiceAccountToken"] is False
    assert sa["secrets"] == [{"name": "isnetflow-s3-credentials"}]
