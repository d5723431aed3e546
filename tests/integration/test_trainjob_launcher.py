"""``submit_and_wait`` against a small Kubernetes API on 127.0.0.1 that serves one resource, TrainJobs.

The server speaks the API server's shapes for ``trainjobs.trainer.kubeflow.org/v1alpha1``: POST on the
collection (201 with ``metadata.resourceVersion``, 409 AlreadyExists with a ``Status``), GET by name
(404 with a ``Status``), and GET on the collection with ``watch=true`` streaming newline-delimited JSON
events (``ADDED`` / ``MODIFIED`` / ``DELETED`` / ``ERROR``) over a chunked response that ends after
``timeoutSeconds``. Each test scripts what the successive watches send, and checks the exact requests
the launcher made (method, path, query) and the body it posted. The launcher is the real one, with the
real ``kubernetes`` client pointed at the server.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from kubernetes import client
from kubernetes.config import incluster_config, kube_config

from isnetflow.cluster.trainjob import (
    TrainJobConflict,
    TrainJobFailed,
    load_api_client,
    submit_and_wait,
    trainjob_manifest,
)
from tests._ports import JSONHandler, serve_http

pytestmark = pytest.mark.integration

NAMESPACE = "isnetflow"
NAME = "cxr-train-7f3a9c"
COLLECTION = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
ITEM = f"{COLLECTION}/{NAME}"
#: a watch request for the job from resource version ``rv`` in a ``seconds`` window
WATCH_QUERY = {"fieldSelector": f"metadata.name={NAME}", "watch": "True"}


def watch_query(rv: int, seconds: int = 60) -> dict[str, str]:
    return {**WATCH_QUERY, "resourceVersion": str(rv), "timeoutSeconds": str(seconds)}


def condition(kind: str, reason: str, message: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-09-01T10:00:00Z",
    }


COMPLETE = [condition("Complete", "AllJobsCompleted", "jobset completed successfully")]
RUNNING: list[dict[str, str]] = []  # a running TrainJob has no condition, only jobsStatus


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


@dataclass
class FakeAPI:
    """The TrainJobs of one namespace. ``watches``: what each successive watch request sends, steps of
    ``("event", type, conditions)`` (the stored object's conditions become ``conditions`` with a new
    resourceVersion, and the event carries it), ``("update", conditions)`` (the same without an event: a
    change the watcher misses), ``("error", code)`` (an ERROR event with a Status) and ``("sleep", s)``;
    the stream then ends. With no script left, a watch sends nothing until its ``timeoutSeconds``."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    watches: list[list[tuple[Any, ...]]] = field(default_factory=list)
    rv: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bump(self, obj: dict[str, Any], conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
        with self.lock:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            if conditions is not None:
                obj["status"] = {
                    "conditions": conditions,
                    "jobsStatus": [{"name": "node", "ready": 2, "active": 2, "succeeded": 0, "failed": 0}],
                }
            return copy.deepcopy(obj)

    def add(self, manifest: dict[str, Any], conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """Store a TrainJob as the API server would (uid, defaults), as if created earlier."""
        obj = copy.deepcopy(manifest)
        obj["metadata"].update(uid="0b4e-uid", creationTimestamp="2026-09-01T09:00:00Z", generation=1)
        obj["spec"].update(suspend=False, managedBy="trainer.kubeflow.org/trainjob-controller")
        self.objects[obj["metadata"]["name"]] = obj
        return self.bump(obj, conditions)


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def serve(fake: FakeAPI) -> Iterator[FakeAPI]:
    class Handler(JSONHandler):
        protocol_version = "HTTP/1.1"

        def chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = urlsplit(self.path)
            fake.calls.append(Call("POST", parts.path, dict(parse_qsl(parts.query)), body))
            name = body["metadata"]["name"]
            if parts.path != COLLECTION:
                self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))
            elif name in fake.objects:
                message = f'trainjobs.trainer.kubeflow.org "{name}" already exists'
                self.reply(409, status(409, "AlreadyExists", message))
            else:
                self.reply(201, fake.add(body))

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            fake.calls.append(Call("GET", parts.path, query))
            if parts.path == COLLECTION and query.get("watch") == "True":
                self.watch(int(query["timeoutSeconds"]))
            elif parts.path.startswith(COLLECTION + "/"):
                obj = fake.objects.get(parts.path.rsplit("/", 1)[1])
                if obj is None:
                    self.reply(404, status(404, "NotFound", "trainjobs.trainer.kubeflow.org not found"))
                else:
                    self.reply(200, copy.deepcopy(obj))
            else:
                self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))

        def watch(self, timeout_seconds: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                steps = fake.watches.pop(0) if fake.watches else [("sleep", timeout_seconds)]
                for step in steps:
                    if step[0] == "event":
                        _, kind, conditions = step
                        obj = fake.bump(fake.objects[NAME], conditions)
                        self.chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                    elif step[0] == "update":
                        fake.bump(fake.objects[NAME], step[1])
                    elif step[0] == "error":
                        error = status(step[1], "Expired", "too old resource version")
                        self.chunk(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
                    elif step[0] == "sleep":
                        time.sleep(step[1])
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: its verdict
                self.close_connection = True

    with serve_http(Handler) as url:
        fake.url = url
        yield fake


@pytest.fixture
def fake() -> Iterator[FakeAPI]:
    yield from serve(FakeAPI())


@pytest.fixture
def api(fake: FakeAPI) -> Iterator[client.ApiClient]:
    with client.ApiClient(client.Configuration(host=fake.url)) as api_client:
        yield api_client


@pytest.fixture
def manifest() -> dict[str, Any]:
    return trainjob_manifest(
        NAME,
        namespace=NAMESPACE,
        image="ghcr.io/isnetflow/isnetflow:0.1.0",
        args=["--data", "/mnt/data/validated", "--epochs", "20"],
        num_nodes=2,
        gpus_per_node=4,
        env_from_secrets={"MLFLOW_TRACKING_PASSWORD": ("isnetflow-mlflow-credentials", "password")},
    )


class Events(list[tuple[str, str]]):
    """``on_event`` recorder: (kind, the object's resourceVersion)."""

    def __call__(self, kind: str, obj: dict[str, Any]) -> None:
        self.append((kind, obj["metadata"]["resourceVersion"]))


def run(manifest: dict[str, Any], api: client.ApiClient, **kwargs: Any) -> tuple[dict[str, Any], Events]:
    events = Events()
    kwargs.setdefault("timeout_s", 60)
    return submit_and_wait(manifest, api_client=api, on_event=events, **kwargs), events


def test_created_then_complete(fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]) -> None:
    fake.watches = [[("event", "MODIFIED", RUNNING), ("event", "MODIFIED", COMPLETE)]]
    final, events = run(manifest, api)
    assert [(c.method, c.path, c.query) for c in fake.calls] == [
        ("POST", COLLECTION, {}),
        ("GET", COLLECTION, watch_query(101)),  # from the version the create answered
    ]
    assert fake.calls[0].body == manifest
    assert final["status"]["conditions"] == COMPLETE and final["metadata"]["resourceVersion"] == "103"
    assert events == [("CREATED", "101"), ("MODIFIED", "102"), ("MODIFIED", "103")]


def test_failed_raises_with_reason_and_message(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    message = "jobset failed due to one or more job failures: cxr-train-7f3a9c-node-0 BackoffLimitExceeded"
    failed = [condition("Failed", "BackoffLimitExceeded", message)]
    fake.watches = [[("event", "MODIFIED", RUNNING), ("event", "MODIFIED", failed)]]
    with pytest.raises(TrainJobFailed) as info:
        run(manifest, api)
    assert f"{NAMESPACE}/{NAME}" in str(info.value)
    assert "BackoffLimitExceeded" in str(info.value) and message in str(info.value)
    assert (info.value.namespace, info.value.name) == (NAMESPACE, NAME)
    assert (info.value.reason, info.value.message) == ("BackoffLimitExceeded", message)
    assert info.value.trainjob is not None and info.value.trainjob["status"]["conditions"] == failed
    assert [(c.method, c.path) for c in fake.calls] == [("POST", COLLECTION), ("GET", COLLECTION)]


def test_a_retried_task_adopts_its_trainjob(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    """409 AlreadyExists: the same training was submitted before (a retry): read it, wait for it."""
    fake.add(manifest, RUNNING)  # resourceVersion 101, running
    fake.watches = [[("event", "MODIFIED", COMPLETE)]]
    final, events = run(manifest, api)
    assert [(c.method, c.path, c.query) for c in fake.calls] == [
        ("POST", COLLECTION, {}),
        ("GET", ITEM, {}),
        ("GET", COLLECTION, watch_query(101)),
    ]
    assert final["status"]["conditions"] == COMPLETE
    assert events == [("ADOPTED", "101"), ("MODIFIED", "102")]


def test_an_adopted_trainjob_that_already_finished_is_reported_at_once(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    fake.add(manifest, COMPLETE)
    final, _ = run(manifest, api)
    assert final["status"]["conditions"] == COMPLETE
    assert [(c.method, c.path) for c in fake.calls] == [("POST", COLLECTION), ("GET", ITEM)]
    failed = [condition("Failed", "DeadlineExceeded", "TrainJob exceeded its active deadline")]
    fake.objects.clear()
    fake.add(manifest, failed)
    with pytest.raises(TrainJobFailed, match="DeadlineExceeded: TrainJob exceeded its active deadline"):
        run(manifest, api)


def test_another_training_of_the_same_name_is_not_adopted(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    other = copy.deepcopy(manifest)
    other["spec"]["trainer"]["args"] = ["--data", "/mnt/other"]
    fake.add(other, RUNNING)
    with pytest.raises(TrainJobConflict, match=f"{NAMESPACE}/{NAME} already exists"):
        run(manifest, api)
    assert [(c.method, c.path) for c in fake.calls] == [("POST", COLLECTION), ("GET", ITEM)]


def test_a_watch_that_ends_early_is_resumed_from_a_fresh_read(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    """The stream closes before a verdict (and a change happens unseen): the job is read again and
    watched from the version read."""
    fake.watches = [
        [("event", "MODIFIED", RUNNING), ("update", RUNNING)],  # 102 sent, 103 missed, stream ends
        [("event", "MODIFIED", COMPLETE)],
    ]
    final, events = run(manifest, api)
    assert [(c.method, c.path, c.query) for c in fake.calls] == [
        ("POST", COLLECTION, {}),
        ("GET", COLLECTION, watch_query(101)),
        ("GET", ITEM, {}),
        ("GET", COLLECTION, watch_query(103)),
    ]
    assert final["status"]["conditions"] == COMPLETE
    assert events == [("CREATED", "101"), ("MODIFIED", "102"), ("RESYNCED", "103"), ("MODIFIED", "104")]


def test_an_expired_watch_410_is_resumed_from_a_fresh_read(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    fake.watches = [[("update", RUNNING), ("error", 410)], [("event", "MODIFIED", COMPLETE)]]
    _, events = run(manifest, api)
    assert [(c.method, c.path, c.query) for c in fake.calls] == [
        ("POST", COLLECTION, {}),
        ("GET", COLLECTION, watch_query(101)),
        ("GET", ITEM, {}),
        ("GET", COLLECTION, watch_query(102)),
    ]
    assert events == [("CREATED", "101"), ("RESYNCED", "102"), ("MODIFIED", "103")]


def test_a_completion_seen_only_on_the_fresh_read_ends_the_wait(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    fake.watches = [[("update", COMPLETE)]]
    final, events = run(manifest, api)
    assert final["status"]["conditions"] == COMPLETE
    assert [(c.method, c.path) for c in fake.calls] == [
        ("POST", COLLECTION),
        ("GET", COLLECTION),
        ("GET", ITEM),
    ]
    assert events == [("CREATED", "101"), ("RESYNCED", "102")]


def test_a_deleted_trainjob_is_a_failure(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    fake.watches = [[("event", "DELETED", RUNNING)]]
    with pytest.raises(TrainJobFailed, match=f"{NAMESPACE}/{NAME} failed: Deleted"):
        run(manifest, api)


def test_timeout(fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]) -> None:
    """Nothing happens: the watch window (the time left, rounded up to whole seconds) ends, the job is
    read once more, and the launcher gives up, naming the job; it is left running."""
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=rf"TrainJob {NAMESPACE}/{NAME} did not finish within 1 s"):
        run(manifest, api, timeout_s=1.0)
    assert time.monotonic() - start < 10
    assert [(c.method, c.path, c.query) for c in fake.calls] == [
        ("POST", COLLECTION, {}),
        ("GET", COLLECTION, watch_query(101, seconds=1)),
        ("GET", ITEM, {}),
    ]


def test_long_waits_are_watched_in_windows(
    fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]
) -> None:
    fake.watches = [[("sleep", 1)], [("event", "MODIFIED", COMPLETE)]]
    run(manifest, api, watch_window_s=1)
    watches = [c.query for c in fake.calls if c.query.get("watch")]
    assert watches == [watch_query(101, seconds=1), watch_query(101, seconds=1)]


def test_other_api_errors_propagate(fake: FakeAPI, api: client.ApiClient, manifest: dict[str, Any]) -> None:
    wrong = copy.deepcopy(manifest)
    wrong["metadata"]["namespace"] = "elsewhere"  # the fake serves one namespace: 404 on create
    with pytest.raises(client.ApiException) as info:
        run(wrong, api)
    assert info.value.status == 404


def test_a_manifest_that_is_no_trainjob_is_refused(api: client.ApiClient) -> None:
    with pytest.raises(ValueError, match="TrainJob"):
        submit_and_wait({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}, api_client=api)


# -- load_api_client ---------------------------------------------------------------------------------------


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "fake",
            }
        )
    )
    return path


def test_a_kubeconfig_outside_a_cluster(
    fake: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "config", fake.url)
    with load_api_client(kubeconfig) as api_client:
        assert api_client.configuration.host == fake.url
        assert api_client.configuration.api_key["authorization"] == "Bearer t0ken"


def test_the_service_account_inside_a_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with load_api_client() as api_client:
        assert api_client.configuration.host == "https://10.96.0.1:443"
        assert api_client.configuration.api_key["authorization"].lower() == "bearer sa-token"
        assert api_client.configuration.ssl_ca_cert == str(tmp_path / "ca.crt")
    # a kubeconfig given explicitly wins, in a cluster too
    with load_api_client(write_kubeconfig(tmp_path / "config", "http://127.0.0.1:9")) as api_client:
        assert api_client.configuration.host == "http://127.0.0.1:9"


def test_without_a_client_the_default_kubeconfig_is_used(
    fake: FakeAPI, manifest: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "config"))
    write_kubeconfig(tmp_path / "config", fake.url)
    fake.watches = [[("event", "MODIFIED", COMPLETE)]]
    final = submit_and_wait(manifest, timeout_s=60)
    assert final["status"]["conditions"] == COMPLETE
    assert [(c.method, c.path) for c in fake.calls] == [("POST", COLLECTION), ("GET", COLLECTION)]
