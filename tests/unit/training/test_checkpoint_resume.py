"""Checkpoints (local and S3 on a moto server) and SIGKILL -> --resume == uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


KILLPOINT = Path(__file__).resolve().parents[2] / "_killpoint"
STEPS_PER_EPOCH = 2  # 11 training images, batch 4 (drop_last)
EPOCHS = 5


def _train_cmd(
    validated: Path, masks: Path, run: Path, ckpt: str, cfg_file: Path, mode: str, *extra: str
) -> list[str]:
    exe = Path(sys.executable).parent / "isnetflow"
    return [
        str(exe), "train", "--data", str(validated), "--masks", str(masks), "--mode", mode,
        "--out", str(run / "out"), "--checkpoint-dir", ckpt,
        "--tracking-uri", f"sqlite:///{run}/mlflow.db", "-c", str(cfg_file), *extra,
    ]  # fmt: skip


def _final_state(ckpt: str) -> dict:
    """The newest checkpoint: the weights, optimizer and loop state the run ended with (not the selected)."""
    state = CheckpointStore(ckpt).load_latest()
    assert state is not None, ckpt
    return state


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a["model"]:  # the final weights and batch-norm statistics
        assert torch.equal(a["model"][k], b["model"][k]), k
    oa, ob = a["optimizer"], b["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]  # the LR schedule's position (lr) and hyper-parameters
    for i, s in oa["state"].items():  # AdamW moments and step counts
        for name, v in s.items():
            assert torch.equal(v, ob["state"][i][name]), (i, name)
    sa, sb = dict(a["state"]), dict(b["state"])
    best_a, best_b = sa.pop("best_state"), sb.pop("best_state")
    # the selection's front (train.selection_auc_tolerance): the same epochs, AUCs, scores and weights
    front_a, front_b = sa.pop("front", []), sb.pop("front", [])
    assert [(f["epoch"], f["auc"], f["score"]) for f in front_a] == [
        (f["epoch"], f["auc"], f["score"]) for f in front_b
    ]
    for fa, fb in zip(front_a, front_b, strict=True):
        assert all(torch.equal(fa["state"][k], fb["state"][k]) for k in fa["state"])
    assert sa == sb  # step counters, history, selection score, C1/C2, schedule start, the epoch's sums
    assert best_a.keys() == best_b.keys() and all(torch.equal(best_a[k], best_b[k]) for k in best_a)


@pytest.fixture(scope="module")
def resume_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = TrainConfig(
        model="cnn-small", image_size=48, batch_size=4, epochs=EPOCHS, warmup_epochs=1, val_fraction=0.3,
        test_fraction=0.1, audit_samples=8, num_threads=1, device="cpu", checkpoint_every=1,
    )  # fmt: skip
    cfg_file = tmp_path_factory.mktemp("resume") / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))
    return cfg_file


@pytest.fixture(scope="module")
def uninterrupted_isnet(
    tmp_path_factory: pytest.TempPathFactory, tiny_validated: Path, tiny_cohort: Path, resume_config: Path
) -> Path:
    run = tmp_path_factory.mktemp("full-isnet")
    cmd = _train_cmd(tiny_validated, tiny_cohort / "masks", run, str(run / "ck"), resume_config, "isnet")
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    return run


def _kill_and_resume(
    validated: Path, masks: Path, run: Path, ckpt: str, cfg_file: Path, mode: str, kill_step: int
) -> None:
    """Run until the process SIGKILLs itself before optimizer step ``kill_step`` (tests/_killpoint), then
    resume it; the killed run left the checkpoint of step ``kill_step - 1`` and no model."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    hook = {
        "PYTHONPATH": os.pathsep.join([str(KILLPOINT), env.get("PYTHONPATH", "")]),
        "ISNETFLOW_KILL_AT_STEP": str(kill_step),
    }
    killed = subprocess.run(
        _train_cmd(validated, masks, run, ckpt, cfg_file, mode), env=env | hook, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    killed_state = _final_state(ckpt)["state"]
    assert killed_state["global_step"] == kill_step - 1
    if mode == "isnet" and kill_step > 2 * STEPS_PER_EPOCH:  # killed after a selected (best) epoch
        assert killed_state["best_epoch"] >= 1 and killed_state["best_state"] is not None
    assert not (run / "out" / "model.pt").exists()
    resume = _train_cmd(validated, masks, run, ckpt, cfg_file, mode, "--resume")
    subprocess.run(resume, check=True, env=env, capture_output=True)


def _assert_resumed_mlflow_run(run: Path) -> None:
    """The resume continued the killed MLflow run (named by the checkpoints), now FINISHED with every
    epoch's metrics; no second run, none left RUNNING."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    (tracked,) = runs
    assert tracked.info.status == "FINISHED" and tracked.data.tags["isnetflow.resumed"] == "true"
    steps = sorted({m.step for m in client.get_metric_history(tracked.info.run_id, "val_auc")})
    assert steps == list(range(EPOCHS))


@pytest.mark.parametrize("where", ["after-best-epoch", pytest.param("warm-up", marks=pytest.mark.slow)])
def test_sigkill_then_resume_equals_uninterrupted(
    tmp_path: Path, tiny_validated: Path, tiny_cohort: Path, resume_config: Path, uninterrupted_isnet: Path,
    where: str,
) -> None:  # fmt: skip
    full = uninterrupted_isnet
    if where == "after-best-epoch":
        # epoch 2, second step: the selection already holds a best epoch (1) whose weights exist only in
        # the checkpoint's selection state, and the epoch's running loss sums are half done
        kill_step = 2 * STEPS_PER_EPOCH + 2
    else:
        kill_step = 2  # inside the warm-up epoch (epoch 0), before C1/C2 and the heatmap loss
    part = tmp_path / "part"
    _kill_and_resume(
        tiny_validated, tiny_cohort / "masks", part, str(part / "ck"), resume_config, "isnet", kill_step
    )
    _assert_same_state(_final_state(str(full / "ck")), _final_state(str(part / "ck")))
    a = torch.load(full / "out" / "model.pt", weights_only=False).state_dict()
    b = torch.load(part / "out" / "model.pt", weights_only=False).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the selected model
    _assert_resumed_mlflow_run(part)
    assert (part / "ck" / "mlflow_run_id").read_text().strip()


@pytest.mark.integration
def test_standard_model_with_s3_checkpoints_resumes_exactly(
    tmp_path: Path, tiny_validated: Path, tiny_cohort: Path, resume_config: Path, s3_endpoint: str
) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="ckpt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, part = tmp_path / "full", tmp_path / "part"
    masks = tiny_cohort / "masks"
    cmd = _train_cmd(tiny_validated, masks, full, "s3://ckpt/full", resume_config, "standard")
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    _kill_and_resume(tiny_validated, masks, part, "s3://ckpt/part", resume_config, "standard", 5)
    _assert_same_state(_final_state("s3://ckpt/full"), _final_state("s3://ckpt/part"))
    _assert_resumed_mlflow_run(part)


# ---- S3 (and disk) failures while checkpointing -------------------------------------------------------


def _client_error(code: str, op: str = "PutObject") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}}, op)


@pytest.mark.integration
def test_checkpoint_errors_are_classified_and_name_the_object(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.exceptions import ReadTimeoutError

    from isnetflow.training.checkpoint import CheckpointError

    boto3.client("s3").create_bucket(Bucket="ckpt")
    store = CheckpointStore("s3://ckpt/runs/a", keep=2)
    store.save({"x": torch.arange(2)}, 1)
    real_put = store._s3.put_object
    for failure, permanent in (
        (_client_error("AccessDenied"), True),
        (_client_error("NoSuchBucket"), True),
        (_client_error("SlowDown"), False),
        (ReadTimeoutError(endpoint_url=s3_endpoint), False),
    ):

        def put(failure: Exception = failure, **kwargs: object) -> None:
            raise failure

        monkeypatch.setattr(store._s3, "put_object", put)
        with pytest.raises(CheckpointError) as info:
            store.save({"x": torch.arange(3)}, 2)
        assert info.value.permanent is permanent
        assert "s3://ckpt/runs/a/step-00000002.pt: cannot write" in str(info.value)
        # the failed write never moved 'latest': the previous checkpoint is what a resume reads
        monkeypatch.setattr(store._s3, "put_object", real_put)
        assert torch.equal(store.load_latest()["x"], torch.arange(2))


@pytest.mark.integration
def test_a_vanished_latest_checkpoint_falls_back_to_the_newest_left(s3_endpoint: str) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ckpt")
    store = CheckpointStore("s3://ckpt/runs/v", keep=3)
    for step in (1, 2, 3):
        store.save({"x": torch.full((1,), float(step))}, step)
    s3.delete_object(Bucket="ckpt", Key="runs/v/step-00000003.pt")  # listed, then gone (a lifecycle rule)
    assert torch.equal(store.load_latest()["x"], torch.full((1,), 2.0))
    for step in (1, 2):
        s3.delete_object(Bucket="ckpt", Key=f"runs/v/step-{step:08d}.pt")
    with pytest.raises(FileNotFoundError, match="no older checkpoint of its history is left"):
        store.load_latest()


def _tiny_data() -> object:
    from isnetflow.config import SynthConfig
    from isnetflow.training.data import from_synthetic

    return from_synthetic(SynthConfig(n=40, size=64, seed=3, workers=1), 32, val_fraction=0.25, seed=0)


@pytest.mark.usefixtures("one_thread")
def test_training_rides_out_transient_checkpoint_failures_and_stops_on_permanent_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two failed checkpoints in a row (a timeout) are logged and training goes on; a permission error stops
    it with a message naming --resume, and the resume ends where an uninterrupted run ends."""
    from isnetflow.training import train
    from isnetflow.training.checkpoint import CheckpointError

    data = _tiny_data()
    cfg = TrainConfig(
        model="cnn-small", image_size=32, batch_size=4, epochs=3, warmup_epochs=1, audit_samples=0,
        num_threads=1, device="cpu", checkpoint_every=1, mode="standard",
    )  # fmt: skip
    full = train(cfg.model_copy(update={"checkpoint_dir": str(tmp_path / "full")}), data, progress=False)

    real = CheckpointStore.save
    calls = {"n": 0}

    def flaky(self: CheckpointStore, state: dict, step: int) -> str:
        calls["n"] += 1
        if calls["n"] in (2, 3):  # two in a row: below the limit of 3
            raise CheckpointError(
                f"{self.location}/step-{step:08d}.pt: cannot write: timeout", permanent=False
            )
        return real(self, state, step)

    monkeypatch.setattr(CheckpointStore, "save", flaky)
    flaky_run = train(
        cfg.model_copy(update={"checkpoint_dir": str(tmp_path / "flaky")}), data, progress=False
    )
    assert [h["val_auc"] for h in flaky_run.history] == [h["val_auc"] for h in full.history]

    def denied(self: CheckpointStore, state: dict, step: int) -> str:
        if step == 4:
            raise CheckpointError(f"{self.location}: cannot write: AccessDenied", permanent=True)
        return real(self, state, step)

    monkeypatch.setattr(CheckpointStore, "save", denied)
    part = cfg.model_copy(update={"checkpoint_dir": str(tmp_path / "part")})
    with pytest.raises(CheckpointError, match=r"training stopped at step 4 .*resume .* with --resume"):
        train(part, data, progress=False)
    assert CheckpointStore(tmp_path / "part").load_latest()["state"]["global_step"] == 3
    monkeypatch.setattr(CheckpointStore, "save", real)
    resumed = train(part, data, resume=True, progress=False)
    assert [h["val_auc"] for h in resumed.history] == [h["val_auc"] for h in full.history]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
