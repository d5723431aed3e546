"""Helpers for the offline deployment checks: the tool venv, kustomize rendering, manifest walking and a
small NetworkPolicy evaluator (which connections the rendered policies let through)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = ("dev", "production")
NAMESPACE = "isnetflow"
#: Kubernetes version the manifests are validated against (schemas shipped by kubernetes-validate).
K8S_VERSION = "1.30.0"
#: Kinds whose pod template runs containers.
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}

Manifest = dict[str, Any]
#: The only checkov checks allowed to be skipped (each skip carries its reason in a checkov.io/skipN
#: annotation on the resource): image digests (CKV_K8S_43) and credentials as environment variables
#: (CKV_K8S_35, where MLflow/MinIO read them only from the environment). A new skip needs review here.
ALLOWED_K8S_SKIPS = {"CKV_K8S_43", "CKV_K8S_35"}


def tools_venv() -> Path:
    return Path(os.environ.get("ISNETFLOW_TOOLS_VENV", REPO / ".venv-tools"))


def tool(name: str) -> Path:
    """A binary of the deployment-tool venv (``make tools``); fails the test, never skips, when absent."""
    path = tools_venv() / "bin" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{path} is missing: run `make tools` (make test does it) to install the deployment checkers"
        )
    return path


def source_tree(dest: Path) -> Path:
    """Copy ``k8s/`` as a fresh clone would have it (tracked + untracked-but-not-ignored files) to ``dest``.

    Rendering from this copy proves that no kustomization needs a git-ignored file (such as a filled-in
    secret env file). Outside a git checkout, the whole folder is copied.
    """
    git = shutil.which("git")
    listing = (
        subprocess.run(
            [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z", "k8s"],
            cwd=REPO,
            capture_output=True,
            check=False,
        )
        if git
        else None
    )
    if listing is None or listing.returncode != 0:
        shutil.copytree(K8S, dest / "k8s")
        return dest / "k8s"
    for rel in filter(None, listing.stdout.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest / "k8s"


def render(kustomization_dir: Path) -> list[Manifest]:
    """``kubectl kustomize DIR`` (kubectl's built-in kustomize): what ``kubectl apply -k`` would send."""
    proc = subprocess.run(
        [str(tool("kubectl")), "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kustomize failed for {kustomization_dir}:\n{proc.stderr}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


# -- checkov ---------------------------------------------------------------------------------------------


def checkov(target: Path, framework: str) -> dict[str, Any]:
    where = ["--directory", str(target)] if target.is_dir() else ["--file", str(target)]
    proc = subprocess.run(
        [str(tool("checkov")), "--framework", framework, "--output", "json", "--skip-download", *where],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["check_type"] == framework
    results: dict[str, Any] = report["results"]
    assert results.get("parsing_errors", []) == []
    return results


def failures(results: dict[str, Any]) -> list[str]:
    return [f"{c['check_id']} {c['resource']} ({c['check_name']})" for c in results["failed_checks"]]


def by_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def one(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = by_kind(docs, kind)
    assert name in found, f"{kind}/{name} missing; have {sorted(found)}"
    return found[name]


def generated(docs: list[Manifest], kind: str, base_name: str) -> Manifest:
    """A ConfigMap/Secret made by a generator: ``base_name`` plus kustomize's hash suffix."""
    found = [d for n, d in by_kind(docs, kind).items() if n == base_name or n.rsplit("-", 1)[0] == base_name]
    assert len(found) == 1, f"expected one generated {kind} {base_name}, found {len(found)}"
    return found[0]


def pod_spec(doc: Manifest) -> dict[str, Any]:
    if doc["kind"] == "Pod":
        return dict(doc["spec"])
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(doc["spec"]["template"]["spec"])


def pod_labels(doc: Manifest) -> dict[str, str]:
    if doc["kind"] == "Pod":
        return dict(doc["metadata"].get("labels", {}))
    template = (
        doc["spec"]["jobTemplate"]["spec"]["template"]
        if doc["kind"] == "CronJob"
        else doc["spec"]["template"]
    )
    return dict(template["metadata"].get("labels", {}))


def workloads(docs: list[Manifest]) -> list[Manifest]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def containers(doc: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("Kind/name/container", container)`` for every container and init container of a workload."""
    spec = pod_spec(doc)
    for c in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        yield f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}", c


def effective(container: Mapping[str, Any], spec: Mapping[str, Any], key: str) -> Any:
    """A security setting as the kubelet applies it: the container's value, else the pod's."""
    csc = container.get("securityContext", {})
    return csc[key] if key in csc else spec.get("securityContext", {}).get(key)


def hardening_problems(doc: Manifest) -> list[str]:
    """What a reviewer would flag in a workload's pod: ``["Kind/name/container: check", ...]``."""
    spec = pod_spec(doc)
    problems = []
    for where, c in containers(doc):
        csc = c.get("securityContext", {})
        checks = {
            "runAsNonRoot": effective(c, spec, "runAsNonRoot") is True,
            "runAsUser >= 10000": (effective(c, spec, "runAsUser") or 0) >= 10000,
            "allowPrivilegeEscalation: false": csc.get("allowPrivilegeEscalation") is False,
            "privileged not true": csc.get("privileged") is not True,
            "readOnlyRootFilesystem": csc.get("readOnlyRootFilesystem") is True,
            "capabilities drop ALL": "ALL" in csc.get("capabilities", {}).get("drop", []),
            "no added capabilities": not csc.get("capabilities", {}).get("add"),
            "seccomp RuntimeDefault": (effective(c, spec, "seccompProfile") or {}).get("type")
            == "RuntimeDefault",
            "cpu+memory requests and limits": all(
                k in c.get("resources", {}).get(kind, {})
                for kind in ("requests", "limits")
                for k in ("cpu", "memory")
            ),
        }
        problems += [f"{where}: {name}" for name, ok in checks.items() if not ok]
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{where}: {key}")
    return problems


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of command/args from the container's environment."""
    out = value
    for name, val in env.items():
        out = out.replace(f"$({name})", val)
    return out


def container_env(container: Mapping[str, Any], docs: list[Manifest]) -> dict[str, str]:
    """The container's plain and ConfigMap-sourced env values (Secrets are not in the rendered output)."""
    maps = by_kind(docs, "ConfigMap")
    env: dict[str, str] = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = str(maps[ref["name"]]["data"][ref["key"]])
    return env


def secret_refs(docs: list[Manifest]) -> set[tuple[str, str]]:
    """Every ``(secret name, key)`` a rendered manifest reads: env secretKeyRef and secret volume items."""
    refs: set[tuple[str, str]] = set()
    for doc in workloads(docs):
        spec = pod_spec(doc)
        for _, c in containers(doc):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
            for src in c.get("envFrom", []):
                assert "secretRef" not in src, "envFrom a whole Secret: list the keys explicitly"
        for v in spec.get("volumes", []):
            if "secret" in v:
                items = v["secret"].get("items")
                assert items, f"secret volume {v['name']} must list its items (least exposure)"
                refs |= {(v["secret"]["secretName"], i["key"]) for i in items}
    return refs


# -- KServe ----------------------------------------------------------------------------------------------

#: CRD schemas (openAPIV3Schema) vendored from kserve/kserve and kubeflow/trainer (see schemas/README.md)
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def _strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever properties are listed and the CRD does not
    preserve unknown fields: what ``kubectl apply`` (server-side strict field validation) refuses."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_errors(doc: Manifest) -> list[str]:
    """Errors of a custom resource (KServe, TrainJob) against its vendored CRD schema (strict),
    ``["path: message", ...]``."""
    import jsonschema

    kind, (group, _, version) = doc["kind"], doc["apiVersion"].partition("/")
    path = SCHEMAS / f"{kind.lower()}-{version}.json.gz"
    assert path.is_file(), f"no vendored schema for {doc['apiVersion']} {kind}"
    crd = json.loads(gzip.decompress(path.read_bytes()))
    assert (crd["group"], crd["kind"], crd["version"]) == (group, kind, version)
    validator = jsonschema.Draft7Validator(_strict(crd["openAPIV3Schema"]))
    return sorted(
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)
    )


def kserve_predictor(runtime: Manifest, isvc: Manifest) -> Manifest:
    """The predictor Deployment KServe (RawDeployment mode) builds from a ServingRuntime and an
    InferenceService: the runtime's container and volumes, the InferenceService's pod settings, labels
    and annotations, the model's resources over the runtime's, and the env KServe injects for MLServer.
    KServe's own storage-initializer init container (its image, its settings) is left out."""
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    (container,) = [dict(c) for c in runtime["spec"]["containers"]]
    container["resources"] = model.get("resources", container.get("resources", {}))
    name = isvc["metadata"]["name"]
    container["env"] = [
        *container.get("env", []),
        {"name": "MLSERVER_MODEL_NAME", "value": name},
        {"name": "MLSERVER_MODEL_URI", "value": "/mnt/models"},
    ]
    labels = {
        **predictor.get("labels", {}),
        "component": "predictor",
        "serving.kserve.io/inferenceservice": name,
    }
    pod = {
        "serviceAccountName": predictor["serviceAccountName"],
        "automountServiceAccountToken": predictor.get("automountServiceAccountToken"),
        "securityContext": predictor.get("securityContext", {}),
        "volumes": runtime["spec"].get("volumes", []),
        "containers": [container],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"{name}-predictor",
            "namespace": isvc["metadata"]["namespace"],
            "labels": labels,
            "annotations": predictor.get("annotations", {}),
        },
        "spec": {
            "replicas": predictor.get("minReplicas", 1),
            "selector": {"matchLabels": {"serving.kserve.io/inferenceservice": name}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


# -- NetworkPolicy evaluation --------------------------------------------------------------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions In/NotIn/Exists/DoesNotExist); ``{}`` matches all."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Pod:
    labels: Mapping[str, str]
    namespace: str = NAMESPACE
    namespace_labels: Mapping[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def _port_matches(entry: Mapping[str, Any], port: int) -> bool:
    """A NetworkPolicyPort admits TCP ``port``: no ``port`` means every port of the protocol, ``endPort``
    a range; a named port is not resolved (it does not match)."""
    if entry.get("protocol", "TCP") != "TCP":
        return False
    if "port" not in entry:
        return True
    start = entry["port"]
    return isinstance(start, int) and start <= port <= entry.get("endPort", start)


def ingress_allowed(policies: list[Manifest], src: Pod, dst: Pod, port: int) -> bool:
    """Whether the policies admit a TCP connection from ``src`` to ``dst:port`` (ingress side only).

    Same semantics as the API server: a pod selected by no Ingress policy accepts everything; otherwise
    the union of the selecting policies' rules applies. Only what these manifests use is implemented:
    podSelector/namespaceSelector peers (no ipBlock) and TCP ports (numeric, ranges, or all).
    """
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace", NAMESPACE) == dst.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(p["spec"].get("podSelector", {}), dst.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(_port_matches(p, port) for p in ports):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                assert "ipBlock" not in peer, "ipBlock peers are not evaluated here"
                ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
                if ns_sel is None:
                    in_ns = src.namespace == policy["metadata"].get("namespace", NAMESPACE)
                else:
                    in_ns = selector_matches(ns_sel, src.ns_labels())
                if in_ns and selector_matches(pod_sel, src.labels):
                    return True
    return False
