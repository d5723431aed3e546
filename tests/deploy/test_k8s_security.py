"""Security and consistency properties of the rendered overlays (what a reviewer would check by hand)."""

from __future__ import annotations

import configparser
import os
import re
from urllib.parse import urlsplit

import pytest
import yaml

from isnetflow import __version__
from isnetflow.cluster.names import MLFLOW_CLIENT_LABEL, S3_CLIENT_LABEL, TRAINING_POD_LABEL
from isnetflow.cluster.trainjob import trainjob_manifest, trainjob_name
from tests.deploy.manifests import (
    K8S,
    LONG_RUNNING_KINDS,
    NAMESPACE,
    Manifest,
    Pod,
    by_kind,
    container_env,
    containers,
    expand,
    generated,
    hardening_problems,
    ingress_allowed,
    one,
    pod_labels,
    pod_spec,
    secret_refs,
    workloads,
)

#: The contract the pipeline code relies on (kfp.kubernetes.use_secret_as_env / use_config_map_as_env).
PIPELINE_SECRETS = {
    "isnetflow-s3-credentials": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    "isnetflow-mlflow-credentials": {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"},
    "isnetflow-postgres": {"POSTGRES_USER", "POSTGRES_PASSWORD"},
}
CONFIG_KEYS = {"MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"}
TRACKING_URI = "http://mlflow.isnetflow.svc.cluster.local:5000"
PROJECT_IMAGE = f"ghcr.io/isnetflow/isnetflow:{__version__}"
CREDENTIAL_ENV = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN")
FORBIDDEN_VERBS = {"list", "watch", "delete", "deletecollection", "escalate", "bind", "impersonate"}
#: The one exception: the TrainJob launcher (isnetflow.cluster.trainjob) watches the TrainJob it submitted
#: (a watch with fieldSelector=metadata.name=..., which the API server authorizes as "watch" alone).
ALLOWED_WATCH = {("trainer.kubeflow.org", "trainjobs")}
#: Secrets the pipeline pods get as env vars only (kubelet), never through the API.
SERVER_ONLY_SECRETS = {"isnetflow-mlflow-credentials", "isnetflow-postgres", "isnetflow-mlflow-admin"}

Overlay = tuple[str, list[Manifest]]


def mlflow_container(docs: list[Manifest]) -> dict:
    return next(c for _, c in containers(one(docs, "Deployment", "mlflow")) if c["name"] == "mlflow")


def mlflow_args(docs: list[Manifest]) -> dict[str, str]:
    """``{"--flag": value}`` of the MLflow server command, with $(VAR)s expanded."""
    c = mlflow_container(docs)
    assert c["command"] == ["mlflow"] and c["args"][0] == "server"
    env = container_env(c, docs)
    out = {}
    for arg in c["args"][1:]:
        flag, _, value = arg.partition("=")
        out[flag] = expand(value, env)
    return out


# -- containers --------------------------------------------------------------------------------------------


def test_every_container_is_hardened(overlay: Overlay) -> None:
    _, docs = overlay
    assert [p for doc in workloads(docs) for p in hardening_problems(doc)] == []


def test_long_running_workloads_have_probes(overlay: Overlay) -> None:
    _, docs = overlay
    long_running = [d for d in workloads(docs) if d["kind"] in LONG_RUNNING_KINDS]
    assert {d["metadata"]["name"] for d in long_running} >= {"mlflow"}
    for doc in long_running:
        for where, c in containers(doc):
            assert "livenessProbe" in c and "readinessProbe" in c, where
    mlflow = mlflow_container(docs)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert mlflow[probe]["httpGet"]["path"] == "/health"
        assert mlflow[probe]["httpGet"]["port"] == "http"


def test_mlflow_writes_only_to_its_tmp_volume(overlay: Overlay) -> None:
    _, docs = overlay
    mlflow = mlflow_container(docs)
    assert mlflow["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod_spec(one(docs, "Deployment", "mlflow"))["volumes"]}
    writable = [m for m in mlflow["volumeMounts"] if not m.get("readOnly")]
    assert [(m["mountPath"], "emptyDir" in volumes[m["name"]]) for m in writable] == [("/tmp", True)]
    env = container_env(mlflow, docs)
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp"


def test_images_are_pinned(overlay: Overlay) -> None:
    _, docs = overlay
    images = {c["image"] for d in workloads(docs) for _, c in containers(d)}
    for image in images:
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and "/" in name and tag and tag != "latest"), image
    assert PROJECT_IMAGE in images


def test_project_image_matches_components() -> None:
    """The deployment runs the tag the pipeline components are compiled with (components/image.py)."""
    if "ISNETFLOW_IMAGE" in os.environ:
        pytest.skip("ISNETFLOW_IMAGE overrides the component image in this environment")
    from isnetflow_kfp.components.image import IMAGE

    assert IMAGE == PROJECT_IMAGE
    kustomizations = [yaml.safe_load(p.read_text()) for p in K8S.rglob("kustomization.yaml")]
    tags = {(i["newName"], i["newTag"]) for k in kustomizations for i in k.get("images", [])}
    assert tags == {tuple(PROJECT_IMAGE.rsplit(":", 1))}


def test_service_account_tokens_only_where_needed(overlay: Overlay) -> None:
    _, docs = overlay
    for doc in workloads(docs):
        spec = pod_spec(doc)
        assert spec.get("serviceAccountName") == "isnetflow-workload", doc["metadata"]["name"]
        assert spec.get("automountServiceAccountToken") is False, doc["metadata"]["name"]
    accounts = by_kind(docs, "ServiceAccount")
    assert accounts["isnetflow-workload"]["automountServiceAccountToken"] is False
    assert accounts["isnetflow-pipeline-runner"]["automountServiceAccountToken"] is True


# -- secrets and configuration --------------------------------------------------------------------------


def secret_template() -> dict[str, dict[str, str]]:
    docs = list(yaml.safe_load_all((K8S / "base" / "secrets.example.yaml").read_text()))
    assert all(d["kind"] == "Secret" and d["metadata"]["namespace"] == NAMESPACE for d in docs)
    return {d["metadata"]["name"]: d.get("stringData", {}) | d.get("data", {}) for d in docs}


def test_secret_template_has_the_contract_and_no_values() -> None:
    template = secret_template()
    for name, keys in PIPELINE_SECRETS.items():
        assert set(template[name]) == keys
    assert set(template["isnetflow-mlflow-admin"]) == {
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
    }
    assert {k: v for s in template.values() for k, v in s.items() if v not in ("", None)} == {}


def test_secret_template_is_not_deployed() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(path.read_text())
        listed = [
            *k.get("resources", []),
            *k.get("components", []),
            *(p.get("path", "") for p in k.get("patches", [])),
        ]
        assert not [r for r in listed if "secret" in r.lower()], path
        assert "secretGenerator" not in k, path


def test_no_secret_values_in_rendered_output(overlay: Overlay) -> None:
    _, docs = overlay
    assert by_kind(docs, "Secret") == {}
    text = yaml.safe_dump_all(docs)
    # No credentials inline anywhere: URIs have no user:password@, no env var holds a literal credential.
    assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text)
    for doc in workloads(docs):
        for where, c in containers(doc):
            for e in c.get("env", []):
                if CREDENTIAL_ENV.search(e["name"]) and not e["name"].endswith("_FILE"):
                    assert "value" not in e, f"{where}: {e['name']} has a literal value"


def test_every_secret_reference_is_in_the_template(overlay: Overlay) -> None:
    _, docs = overlay
    template = {(name, key) for name, keys in secret_template().items() for key in keys}
    refs = secret_refs(docs)
    assert refs, "no secret is referenced at all"
    assert refs <= template, refs - template


def test_pipeline_config_map(overlay: Overlay) -> None:
    name, docs = overlay
    config = one(docs, "ConfigMap", "isnetflow-config")  # exact name: the pipeline references it
    assert set(config["data"]) == CONFIG_KEYS
    assert config["data"]["MLFLOW_TRACKING_URI"] == TRACKING_URI
    assert config["data"]["MLFLOW_S3_ENDPOINT_URL"] == config["data"]["AWS_ENDPOINT_URL"]
    service = one(docs, "Service", "mlflow")
    assert [p["port"] for p in service["spec"]["ports"]] == [5000]
    endpoint = urlsplit(config["data"]["AWS_ENDPOINT_URL"])
    if name == "dev":
        assert endpoint.hostname == "minio.isnetflow.svc.cluster.local" and endpoint.port == 9000
    else:
        assert endpoint.scheme == "https" and "isnetflow.svc" not in endpoint.netloc


def test_dicom_cache_claim(overlay: Overlay) -> None:
    name, docs = overlay
    pvc = one(docs, "PersistentVolumeClaim", "isnetflow-dicom-cache")
    assert pvc["spec"]["accessModes"] == (["ReadWriteOnce"] if name == "dev" else ["ReadWriteMany"])


# -- the MLflow server ----------------------------------------------------------------------------------


def test_mlflow_command(overlay: Overlay) -> None:
    name, docs = overlay
    c = mlflow_container(docs)
    env_names = [e["name"] for e in c["env"]]
    assert len(env_names) == len(set(env_names))
    for arg in c["args"]:  # every $(VAR) is defined explicitly, or Kubernetes would pass it literally
        for var in re.findall(r"\$\((\w+)\)", arg):
            assert var in env_names, var
    args = mlflow_args(docs)
    assert args["--app-name"] == "basic-auth"
    assert "--serve-artifacts" in args and "--no-serve-artifacts" not in args
    assert "--disable-security-middleware" not in args
    assert (args["--host"], args["--port"]) == ("0.0.0.0", "5000")
    hosts = args["--allowed-hosts"].split(",")
    assert "*" not in "".join(hosts)
    assert {"mlflow.isnetflow.svc.cluster.local:5000", "mlflow:5000", "localhost:5000"} <= set(hosts)
    backend = urlsplit(args["--backend-store-uri"])
    assert backend.scheme == "postgresql+psycopg2" and backend.password is None and backend.username is None
    assert args["--artifacts-destination"].startswith("s3://")
    if name == "production":
        assert int(args["--workers"]) >= 4
        assert backend.hostname and not backend.hostname.endswith(".svc.cluster.local")


def test_mlflow_command_is_accepted_by_the_installed_mlflow(overlay: Overlay) -> None:
    """The flags parse with the project's mlflow (3.17): a renamed or misspelled flag fails here."""
    from click.exceptions import ClickException
    from mlflow.cli import server

    _, docs = overlay
    c = mlflow_container(docs)
    argv = [expand(a, container_env(c, docs)) for a in c["args"][1:]]
    params = server.make_context("server", list(argv)).params
    assert params["app_name"] == "basic-auth" and params["serve_artifacts"] is True
    with pytest.raises(ClickException):
        server.make_context("server", [*argv, "--app-name=basic-oauth"])


def test_mlflow_basic_auth_config(overlay: Overlay) -> None:
    name, docs = overlay
    c = mlflow_container(docs)
    env = container_env(c, docs)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "auth-config")
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == f"{mount['mountPath']}/basic_auth.ini"
    volume = next(
        v for v in pod_spec(one(docs, "Deployment", "mlflow"))["volumes"] if v["name"] == "auth-config"
    )
    ini_map = generated(docs, "ConfigMap", "mlflow-auth-config")
    assert volume["configMap"]["name"] == ini_map["metadata"]["name"]
    ini = configparser.ConfigParser()
    ini.read_string(ini_map["data"]["basic_auth.ini"])
    assert ini["mlflow"]["default_permission"] == "READ"
    assert "admin_password" not in ini["mlflow"]
    auth_db = urlsplit(ini["mlflow"]["database_uri"])
    backend = urlsplit(mlflow_args(docs)["--backend-store-uri"])
    assert auth_db.password is None and auth_db.username is None
    assert (auth_db.hostname, auth_db.port) == (backend.hostname, backend.port), "one database server"
    assert auth_db.path == "/mlflow_auth" and backend.path == "/mlflow"
    # Credentials reach libpq and the auth app through the environment, from Secrets.
    refs = {e["name"]: e["valueFrom"].get("secretKeyRef") for e in c["env"] if "valueFrom" in e}
    assert refs["PGUSER"] == {"name": "isnetflow-postgres", "key": "POSTGRES_USER"}
    assert refs["PGPASSWORD"] == {"name": "isnetflow-postgres", "key": "POSTGRES_PASSWORD"}
    assert refs["MLFLOW_AUTH_ADMIN_PASSWORD"] == {
        "name": "isnetflow-mlflow-admin",
        "key": "MLFLOW_AUTH_ADMIN_PASSWORD",
    }
    assert refs["MLFLOW_FLASK_SERVER_SECRET_KEY"]["name"] == "isnetflow-mlflow-admin"
    if name == "production":
        assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"].startswith("/etc/isnetflow/")
    else:  # the dev PostgreSQL creates the auth database on first start
        init = generated(docs, "ConfigMap", "postgres-initdb")
        assert "CREATE DATABASE mlflow_auth" in "".join(init["data"].values())


def test_production_has_no_in_cluster_backing_services(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["production"]
    assert {d["metadata"]["name"] for d in workloads(docs)} == {"mlflow", "mlflow-pipeline-user"}
    assert "isnetflow.svc.cluster.local:5432" not in yaml.safe_dump_all(docs)
    assert "minio.isnetflow" not in yaml.safe_dump_all(docs)
    assert one(docs, "Deployment", "mlflow")["spec"]["replicas"] >= 2
    assert one(docs, "PodDisruptionBudget", "mlflow")["spec"]["minAvailable"] == 1


def test_dev_is_self_contained(rendered: dict[str, list[Manifest]]) -> None:
    docs = rendered["dev"]
    statefulsets = by_kind(docs, "StatefulSet")
    assert set(statefulsets) == {"postgres", "minio"}
    for sts in statefulsets.values():
        assert sts["spec"]["volumeClaimTemplates"], "persistent data"
        assert one(docs, "Service", sts["spec"]["serviceName"])
    buckets = next(c for _, c in containers(one(docs, "Job", "minio-create-buckets")))
    names = container_env(buckets, docs)["ISNETFLOW_BUCKETS"].split(",")
    artifacts = urlsplit(mlflow_args(docs)["--artifacts-destination"]).netloc
    assert artifacts in names


# -- RBAC and network --------------------------------------------------------------------------------------


def test_pipeline_runner_role_is_minimal(overlay: Overlay) -> None:
    _, docs = overlay
    assert by_kind(docs, "ClusterRole") == {} and by_kind(docs, "ClusterRoleBinding") == {}
    role = one(docs, "Role", "isnetflow-pipeline-runner")
    binding = one(docs, "RoleBinding", "isnetflow-pipeline-runner")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "isnetflow-pipeline-runner", "namespace": NAMESPACE}
    ]
    grants = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        forbidden = FORBIDDEN_VERBS & set(rule["verbs"])
        if {(g, r) for g in rule["apiGroups"] for r in rule["resources"]} <= ALLOWED_WATCH:
            forbidden -= {"watch"}
        assert not forbidden, rule
        for resource in rule["resources"]:
            if resource in {"secrets", "configmaps"}:
                assert rule.get("resourceNames"), f"{resource} only by name"
            grants |= {(resource, verb) for verb in rule["verbs"]}
    readable_secrets = {n for r in role["rules"] if "secrets" in r["resources"] for n in r["resourceNames"]}
    assert readable_secrets.isdisjoint(SERVER_ONLY_SECRETS)
    assert ("pods", "create") not in grants and ("pods/exec", "create") not in grants


PIPELINE_POD = Pod({"workflows.argoproj.io/workflow": "isnetflow-training-x7k2p"})
OTHER_POD = Pod({"app": "notebook"})
KUBEFLOW_POD = Pod({"app": "ml-pipeline-ui"}, namespace="kubeflow")
FOREIGN_POD = Pod({"workflows.argoproj.io/workflow": "other"}, namespace="team-b")


def pod_of(docs: list[Manifest], kind: str, name: str) -> Pod:
    return Pod(pod_labels(one(docs, kind, name)))


def test_network_policies(overlay: Overlay) -> None:
    name, docs = overlay
    policies = list(by_kind(docs, "NetworkPolicy").values())
    deny = one(docs, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    mlflow = pod_of(docs, "Deployment", "mlflow")
    user_job = pod_of(docs, "Job", "mlflow-pipeline-user")
    for src, allowed in [
        (PIPELINE_POD, True),
        (user_job, True),
        (KUBEFLOW_POD, True),
        (OTHER_POD, False),
        (FOREIGN_POD, False),
    ]:
        assert ingress_allowed(policies, src, mlflow, 5000) is allowed, src
    assert not ingress_allowed(policies, PIPELINE_POD, mlflow, 5432)
    # Nothing else of the namespace is reachable by default, e.g. a pipeline pod from a foreign namespace.
    assert not ingress_allowed(policies, FOREIGN_POD, PIPELINE_POD, 8080)
    if name != "dev":
        return
    postgres = pod_of(docs, "StatefulSet", "postgres")
    minio = pod_of(docs, "StatefulSet", "minio")
    buckets = pod_of(docs, "Job", "minio-create-buckets")
    for src in (mlflow, PIPELINE_POD, KUBEFLOW_POD, OTHER_POD, user_job, minio):
        assert ingress_allowed(policies, src, postgres, 5432) is (src == mlflow), src
    for src in (mlflow, PIPELINE_POD, buckets):
        assert ingress_allowed(policies, src, minio, 9000), src
    for src in (KUBEFLOW_POD, OTHER_POD, FOREIGN_POD, postgres):
        assert not ingress_allowed(policies, src, minio, 9000), src


def training_pod(name: str, **pod_labels: str) -> Pod:
    """A pod of TrainJob ``name`` as isnetflow.cluster.trainjob labels it (its runtime patch)."""
    doc = trainjob_manifest(name, namespace=NAMESPACE, image=PROJECT_IMAGE, args=[], pod_labels=pod_labels)
    (job,) = doc["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    # plus what JobSet puts on every pod of the TrainJob (no policy selects by it)
    return Pod(
        job["template"]["spec"]["template"]["metadata"]["labels"] | {"jobset.sigs.k8s.io/jobset-name": name}
    )


def test_training_pods_accept_only_training_pods(overlay: Overlay) -> None:
    """A TrainJob's pods reach each other on every TCP port (torchrun's rendezvous 29500, NCCL's ephemeral
    ports); nothing else of the namespace or outside reaches them. Other trainings of the namespace are
    admitted too: a podSelector cannot ask for the peer's isnetflow.io/trainjob to equal the pod's."""
    name, docs = overlay
    policies = list(by_kind(docs, "NetworkPolicy").values())
    policy = one(docs, "NetworkPolicy", "training-pods")
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {TRAINING_POD_LABEL: "true"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {TRAINING_POD_LABEL: "true"}}}],
                "ports": [{"protocol": "TCP"}],
            }
        ],
    }
    # what the pipeline passes (pipelines/training.py): the MLflow client label, and the S3 one for MinIO
    job = trainjob_name("run-1", "isnet")
    clients = {MLFLOW_CLIENT_LABEL: "true", S3_CLIENT_LABEL: "true"}
    node0, node1 = training_pod(job, **clients), training_pod(job, **clients)
    other_training = training_pod(trainjob_name("run-1", "standard"))
    for port in (29500, 1, 41873, 65535):
        assert ingress_allowed(policies, node1, node0, port), port
        assert ingress_allowed(policies, other_training, node0, port), port
    mlflow = pod_of(docs, "Deployment", "mlflow")
    elsewhere = Pod(node1.labels, namespace="team-b")
    for src in (PIPELINE_POD, OTHER_POD, KUBEFLOW_POD, FOREIGN_POD, mlflow, elsewhere):
        assert not ingress_allowed(policies, src, node0, 29500), src
    # the training-pod label opens nothing else
    assert not ingress_allowed(policies, node0, PIPELINE_POD, 29500)
    assert not ingress_allowed(policies, node0, mlflow, 29500)
    # MLflow admits the training pods by the label the caller passes, and only with it
    assert ingress_allowed(policies, node0, mlflow, 5000)
    assert not ingress_allowed(policies, other_training, mlflow, 5000)
    if name == "dev":
        minio = pod_of(docs, "StatefulSet", "minio")
        assert ingress_allowed(policies, node0, minio, 9000)
        assert not ingress_allowed(policies, other_training, minio, 9000)
        postgres = pod_of(docs, "StatefulSet", "postgres")
        assert not ingress_allowed(policies, node0, postgres, 5432)


def test_network_policy_evaluator_ports() -> None:
    """Guard for the evaluator's ports: a number, a range (endPort), or every port of the protocol."""

    def policy(ports: list[dict]) -> Manifest:
        rule = {"from": [{"podSelector": {}}], "ports": ports}
        return {"metadata": {"namespace": NAMESPACE}, "spec": {"podSelector": {}, "ingress": [rule]}}

    assert ingress_allowed([policy([{"port": 80}])], OTHER_POD, PIPELINE_POD, 80)
    assert not ingress_allowed([policy([{"port": 80}])], OTHER_POD, PIPELINE_POD, 81)
    assert ingress_allowed([policy([{"port": 80, "endPort": 90}])], OTHER_POD, PIPELINE_POD, 90)
    assert not ingress_allowed([policy([{"port": 80, "endPort": 90}])], OTHER_POD, PIPELINE_POD, 91)
    assert ingress_allowed([policy([{"protocol": "TCP"}])], OTHER_POD, PIPELINE_POD, 54321)
    assert not ingress_allowed([policy([{"protocol": "UDP"}])], OTHER_POD, PIPELINE_POD, 54321)
    assert not ingress_allowed([policy([{"port": "http"}])], OTHER_POD, PIPELINE_POD, 80)


def test_network_policy_evaluator_without_policies_allows() -> None:
    """Guard for the evaluator itself: no policy selecting the pod means open, one means closed."""
    assert ingress_allowed([], OTHER_POD, PIPELINE_POD, 80)
    deny = {"metadata": {"namespace": NAMESPACE}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert not ingress_allowed([deny], OTHER_POD, PIPELINE_POD, 80)


def test_pipeline_uses_the_deployment_names(rendered: dict[str, list[Manifest]]) -> None:
    """pipelines/training.py reads the Secrets, ConfigMap and GPU names that k8s/ and the README give."""
    from isnetflow_kfp.pipelines import training

    template = secret_template()
    for secret, keys in [
        (training.S3_SECRET, training.S3_SECRET_KEYS),
        (training.MLFLOW_SECRET, training.MLFLOW_SECRET_KEYS),
    ]:
        assert secret in PIPELINE_SECRETS and set(keys) <= set(template[secret]), secret
    for name in ("dev", "production"):
        config = one(rendered[name], "ConfigMap", training.CONFIG_MAP)
        assert set(training.CONFIG_MAP_KEYS) <= set(config["data"])
    assert training.GPU_NODE_LABEL == ("nvidia.com/gpu.present", "true")
    assert training.GPU_TAINT_KEY == "nvidia.com/gpu"
