"""Checkpoints (local and S3 on a moto server) and SIGKILL -> --resume == uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from isnetflow.config import TrainConfig
from isnetflow.training.checkpoint import CheckpointStore


def test_local_store_keeps_newest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ck", keep=2)
    assert store.load_latest() is None
    for step in (1, 2, 3):
        store.save({"w": torch.full((2,), float(step))}, step)
    assert torch.equal(store.load_latest()["w"], torch.full((2,), 3.0))
    names = sorted(p.name for p in (tmp_path / "ck").glob("step-*.pt"))
    assert names == ["step-00000002.pt", "step-00000003.pt"]


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for k, v in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    try:
        yield url
    finally:
        server.stop()


@pytest.mark.integration
def test_s3_store_roundtrip(s3_endpoint: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="ckpt")
    store = CheckpointStore("s3://ckpt/runs/a", keep=1)
    assert store.load_latest() is None
    store.save({"x": torch.arange(3)}, 5)
    store.save({"x": torch.arange(4)}, 9)
    assert torch.equal(store.load_latest()["x"], torch.arange(4))
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="ckpt")["Contents"])
    assert keys == ["runs/a/history", "runs/a/latest", "runs/a/step-00000009.pt"]


def _train_cmd(validated: Path, masks: Path, out: Path, ckpt: Path, cfg_file: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).parent / "isnetflow"
    return [
        str(exe), "train", "--data", str(validated), "--masks", str(masks), "--mode", "isnet",
        "--out", str(out), "--checkpoint-dir", str(ckpt),
        "--tracking-uri", f"sqlite:///{out.parent}/mlflow.db", "-c", str(cfg_file), *extra,
    ]  # fmt: skip


def test_sigkill_then_resume_equals_uninterrupted(
    tmp_path: Path, tiny_validated: Path, tiny_cohort: Path, tiny_train_config: TrainConfig
) -> None:
    cfg = tiny_train_config.model_copy(update={"epochs": 5, "checkpoint_every": 1, "batch_size": 4})
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    masks = tiny_cohort / "masks"

    full = tmp_path / "full"
    cmd = _train_cmd(tiny_validated, masks, full / "out", full / "ck", cfg_file)
    subprocess.run(cmd, check=True, env=env, capture_output=True)

    part = tmp_path / "part"
    proc = subprocess.Popen(
        _train_cmd(tiny_validated, masks, part / "out", part / "ck", cfg_file),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = part / "ck" / "latest"
    deadline = time.monotonic() + 300
    # Kill mid-run: after the checkpoint of step 4 exists (inside the ISNet phase: epoch 1+).
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.exists() and latest.read_text() >= "step-00000004.pt":
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed; make the run longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip()[5:13])
    total_steps = len(list(full.joinpath("ck").glob("step-*.pt"))) and int(
        (full / "ck" / "latest").read_text().strip()[5:13]
    )
    assert 4 <= killed_at < total_steps, (killed_at, total_steps)
    assert not (part / "out" / "model.pt").exists()
    cmd = _train_cmd(tiny_validated, masks, part / "out", part / "ck", cfg_file, "--resume")
    subprocess.run(cmd, check=True, env=env, capture_output=True)

    a = torch.load(full / "out" / "model.pt", weights_only=False).state_dict()
    b = torch.load(part / "out" / "model.pt", weights_only=False).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    # the resume continued the killed MLflow run (named by the checkpoints), which is now FINISHED with
    # every epoch's metrics; no second run, none left RUNNING
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{part}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    (run,) = runs
    assert run.info.status == "FINISHED" and run.data.tags["isnetflow.resumed"] == "true"
    assert (part / "ck" / "mlflow_run_id").read_text().strip() == run.info.run_id
    steps = sorted({m.step for m in client.get_metric_history(run.info.run_id, "val_auc")})
    assert steps == list(range(cfg.epochs))
