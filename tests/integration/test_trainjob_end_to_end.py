"""The distributed training task end to end, offline: launcher -> TrainJob -> torchrun -> MLflow -> evaluate.

:func:`isnetflow.stages.train.run_trainjob` (what the pipeline's launcher task calls) submits its TrainJob to
a Kubernetes API on 127.0.0.1. That server also plays the Trainer's controller the way its Torch plugin does:
it runs the job's own ``command`` + ``args`` with ``PET_NNODES`` / ``PET_NPROC_PER_NODE`` / ``PET_NODE_RANK``
/ ``PET_MASTER_ADDR`` / ``PET_MASTER_PORT`` and the job's ``env`` (Secret references resolved from a table),
so ``torchrun`` starts 2 CPU ranks (gloo) that read the data from S3 (moto on 127.0.0.1) and log to MLflow.
The job's exit then becomes its ``Complete`` or ``Failed`` condition, sent on the watch. The launcher's
summary, the copied outputs and an evaluation of the logged model are checked; a job that fails surfaces
its reason in the task's error.
"""

from __future__ import annotations

import copy
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from kubernetes import client

from isnetflow.cluster.trainjob import TrainJobFailed
from isnetflow.config import EvaluateConfig, Settings, TrainConfig
from tests._ports import JSONHandler, free_port, serve_http

pytestmark = pytest.mark.integration

NAMESPACE = "isnetflow"
COLLECTION = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
SECRETS = {("s3", "id"): "testing", ("s3", "key"): "testing"}


class FakeTrainer:
    """TrainJobs of one namespace on a local API server; each created job runs as local processes."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, queue.Queue[dict[str, Any] | None]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.logs: dict[str, str] = {}
        self.rv = 0
        self.url = ""

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(obj)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.jobs[name] = copy.deepcopy(body)
        self.events[name] = queue.Queue()
        created = self._bump(self.jobs[name])
        threading.Thread(target=self._run, args=(name,), daemon=True).start()
        return created

    def _run(self, name: str) -> None:
        """The Torch plugin's contract: the job's command, with the PET_* topology and the job's env."""
        trainer = self.jobs[name]["spec"]["trainer"]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        for e in trainer.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            env[e["name"]] = SECRETS[(ref["name"], ref["key"])] if ref else e["value"]
        env |= {
            "PET_NNODES": str(trainer["numNodes"]),
            "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
            "PET_NODE_RANK": "0",
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(free_port()),
            "OMP_NUM_THREADS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        }
        proc = subprocess.run(
            [*trainer["command"], *trainer["args"]], env=env, cwd=self.workdir, capture_output=True, text=True
        )
        self.logs[name] = proc.stdout + proc.stderr
        if proc.returncode == 0:
            cond = {"type": "Complete", "status": "True", "reason": "AllJobsCompleted", "message": "done"}
        else:
            message = f"jobset failed due to one or more job failures: {name}-node-0 BackoffLimitExceeded"
            cond = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": message}
        self.jobs[name]["status"] = {"conditions": [cond]}
        self.events[name].put({"type": "MODIFIED", "object": self._bump(self.jobs[name])})


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[FakeTrainer]:
    fake = FakeTrainer(tmp_path)

    class Handler(JSONHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append(("POST", urlsplit(self.path).path, {}))
            assert urlsplit(self.path).path == COLLECTION
            self.reply(201, fake.create(body))

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            fake.requests.append(("GET", parts.path, query))
            if query.get("watch") == "True":
                name = query["fieldSelector"].removeprefix("metadata.name=")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    event = fake.events[name].get(timeout=float(query["timeoutSeconds"]))
                    if event:  # None: the server is shutting down
                        data = json.dumps(event).encode() + b"\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                except queue.Empty:
                    pass
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.reply(200, copy.deepcopy(fake.jobs[parts.path.rsplit("/", 1)[1]]))

    with serve_http(Handler) as url:
        fake.url = url
        try:
            yield fake
        finally:
            for events in fake.events.values():  # wake waiting watches: no handler thread outlives the test
                events.put(None)


@pytest.fixture
def s3_data(monkeypatch: pytest.MonkeyPatch, tiny_validated: Path, tiny_cohort: Path) -> Iterator[str]:
    """The validated data and masks in a bucket of a moto server (the pipeline's artifact store)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for k, v in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="artifacts")
    for root, prefix in ((tiny_validated, "run/data/validated"), (tiny_cohort / "masks", "run/masks/masks")):
        for f in root.rglob("*"):
            if f.is_file():
                s3.upload_file(str(f), "artifacts", f"{prefix}/{f.relative_to(root).as_posix()}")
    try:
        yield "s3://artifacts/run"
    finally:
        server.stop()


def _settings(**train: Any) -> str:
    base = {"model": "cnn-small", "image_size": 48, "batch_size": 2, "epochs": 3, "warmup_epochs": 1,
            "val_fraction": 0.3, "test_fraction": 0.1, "audit_samples": 4, "device": "cpu"}  # fmt: skip
    cfg = TrainConfig.model_validate(base | train)
    return Settings().model_copy(update={"train": cfg}).model_dump_json()


def _launch(
    trainer: FakeTrainer, s3_data: str, tmp_path: Path, settings_json: str, mode: str, data: str = "data"
) -> dict[str, Any]:
    from isnetflow.stages import train

    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")}
    with client.ApiClient(client.Configuration(host=trainer.url)) as api:
        return train.run_trainjob(
            settings_json,
            mode,
            f"{s3_data}/{data}/validated",
            f"{s3_data}/masks/masks",
            tmp_path / "model",
            gpus=2,
            image="ghcr.io/isnetflow/isnetflow:test",
            pipeline_run="run-0123",
            namespace=NAMESPACE,
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
            env=env,
            env_from_secrets={"AWS_ACCESS_KEY_ID": ("s3", "id"), "AWS_SECRET_ACCESS_KEY": ("s3", "key")},
            pod_labels={"isnetflow.io/mlflow-client": "true", "isnetflow.io/s3-client": "true"},
            api_client=api,
            timeout_s=600,
            pod_out=str(tmp_path / "pod-out"),
        )


def test_trainjob_trains_on_two_ranks_and_the_model_evaluates(
    trainer: FakeTrainer, s3_data: str, tmp_path: Path, tiny_validated: Path, tiny_cohort: Path
) -> None:
    summary = _launch(trainer, s3_data, tmp_path, _settings(), "isnet")
    (name,) = trainer.jobs
    assert name == summary["trainjob"]["name"] and name.startswith("isnetflow-isnet-")
    job = trainer.jobs[name]["spec"]["trainer"]
    assert (job["numNodes"], job["numProcPerNode"]) == (1, 2)
    assert job["args"][job["args"].index("--data") + 1] == f"{s3_data}/data/validated"
    assert [(m, p) for m, p, _ in trainer.requests][:2] == [("POST", COLLECTION), ("GET", COLLECTION)]
    # rank 0 trained with both ranks, tracked the run with the job's tag; the task copied its outputs
    assert summary["processes"] == 2 and summary["mode"] == "isnet", trainer.logs[name][-3000:]
    for f in ("train_summary.json", "history.csv", "heatmaps.png", "learning_curves.png"):
        assert (tmp_path / "model" / f).is_file(), f
    from mlflow import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["isnetflow.trainjob"] == name
    assert run.data.params["train.processes"] == "2"

    # the evaluate stage accepts the model the 2-process training logged
    from isnetflow.stages import evaluate

    fast = EvaluateConfig(n_boot=50, audit_per_site=2, counterfactual_max=20, gallery_per_group=1)
    payload = evaluate.run(
        fast,
        summary["model_uri"],
        tiny_validated,
        tiny_cohort / "masks",
        tmp_path / "evaluation",
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        progress=False,
    )
    ev = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert ev["model"]["run_id"] == summary["run_id"]
    assert 0.0 <= ev["splits"]["external_pooled"]["auc"] <= 1.0 and payload


def test_a_failed_trainjob_fails_the_task_with_its_reason(
    trainer: FakeTrainer, s3_data: str, tmp_path: Path
) -> None:
    # the job's data prefix is empty: every rank exits with the one-line error naming it
    with pytest.raises(TrainJobFailed) as info:
        _launch(trainer, s3_data, tmp_path, _settings(), "standard", data="gone")
    message = str(info.value)
    assert "BackoffLimitExceeded" in message and f"{NAMESPACE}/isnetflow-standard-" in message
    # and the pods' log (what `kubectl logs` shows) has the one-line error naming the empty prefix
    (name,) = trainer.jobs
    assert f"error: {s3_data}/gone/validated: no objects under this prefix" in trainer.logs[name]
