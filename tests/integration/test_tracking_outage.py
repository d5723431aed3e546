"""A training survives its MLflow server going away, against a real server (PostgreSQL + S3 on 127.0.0.1).

* The server stops after epoch 1 and comes back after epoch 3: training never waits for it, the epochs
  of the outage are kept and logged when it is back, and the run ends FINISHED with every epoch.
* The server is down when the training ends: the stage fails with one message that names the checkpoint
  and ``--resume``; after the server is back, ``--resume`` records the same run, complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from isnetflow.config import TrainConfig
from tests._configs import tiny_train_cfg
from tests.integration.mlflow_server import MlflowStack, postgres_available

pytestmark = pytest.mark.integration

EPOCHS = 5
EXPERIMENT = "outage-at-the-end"  # its own: the module's server also holds the other test's run


@pytest.fixture(scope="module")
def stack() -> Iterator[MlflowStack]:
    """A stack of its own (these tests stop and restart its tracking server; each leaves it running)."""
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    started = MlflowStack(workers=1).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def fast_failing_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP client without its minutes of retries, so an outage shows within seconds."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


def _cfg(tmp_path: Path) -> TrainConfig:
    return tiny_train_cfg(
        "isnet", batch_size=4, epochs=EPOCHS, test_fraction=0.1, audit_samples=4, checkpoint_every=2,
        checkpoint_dir=str(tmp_path / "ck"),
    )  # fmt: skip


def _with_outage(
    monkeypatch: pytest.MonkeyPatch, stop_after: int, restart_after: int | None, stack: Any
) -> None:
    """The stage's training, with the server stopped after epoch ``stop_after``'s metrics were handed over
    and restarted after epoch ``restart_after``'s (never when None)."""
    from isnetflow.stages import train as stage

    real = stage.train

    def train(cfg: TrainConfig, data: Any, *, resume: bool, on_epoch: Any, progress: bool) -> Any:
        def hook(epoch: int, metrics: dict[str, float], model: Any) -> None:
            on_epoch(epoch, metrics, model)
            if epoch == stop_after:
                stack.stop_server()
            if epoch == restart_after:
                stack.restart_server()

        return real(cfg, data, resume=resume, on_epoch=hook, progress=progress)

    monkeypatch.setattr(stage, "train", train)


def _complete(client: MlflowClient, run_id: str) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("val_auc", "lr", "train_loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(EPOCHS)), key
    assert "model" in {a.path for a in client.list_artifacts(run_id)} or client.search_logged_models(
        experiment_ids=[run.info.experiment_id]
    )


@pytest.mark.usefixtures("fast_failing_client")
def test_training_rides_out_a_tracking_server_restart(
    stack: MlflowStack,
    tmp_path: Path,
    tiny_validated: Path,
    tiny_cohort: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from isnetflow.stages import train as stage

    _with_outage(monkeypatch, stop_after=1, restart_after=3, stack=stack)
    summary = stage.run(
        _cfg(tmp_path), tiny_validated, tiny_cohort / "masks", tmp_path / "out",
        tracking_uri=stack.tracking_uri, progress=False, tracking_wait_s=120,
    )  # fmt: skip
    assert summary["tracking_outages"] == 1  # epochs 2 and 3 were kept, then logged
    client = MlflowClient(stack.tracking_uri)
    _complete(client, summary["run_id"])
    history = (tmp_path / "out" / "history.csv").read_text().splitlines()
    assert len(history) == EPOCHS + 1


@pytest.mark.usefixtures("fast_failing_client")
def test_tracking_down_at_the_end_fails_clearly_and_resume_records_the_same_run(
    stack: MlflowStack,
    tmp_path: Path,
    tiny_validated: Path,
    tiny_cohort: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from isnetflow.stages import train as stage
    from isnetflow.stages.train import TrackingUnavailable

    real = stage.train
    _with_outage(monkeypatch, stop_after=EPOCHS - 1, restart_after=None, stack=stack)
    args = (_cfg(tmp_path), tiny_validated, tiny_cohort / "masks", tmp_path / "out")
    with pytest.raises(TrackingUnavailable) as info:
        stage.run(
            *args, tracking_uri=stack.tracking_uri, experiment=EXPERIMENT, progress=False, tracking_wait_s=3
        )
    message = str(info.value)
    assert f"MLflow at {stack.tracking_uri} is unreachable after training" in message
    assert f"checkpointed at {tmp_path / 'ck'}" in message and "--resume" in message
    assert (tmp_path / "out" / "model.pt").is_file()  # the local outputs do not depend on the server

    stack.restart_server()
    monkeypatch.setattr(stage, "train", real)
    summary = stage.run(
        *args, tracking_uri=stack.tracking_uri, experiment=EXPERIMENT, progress=False, resume=True
    )
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [summary["run_id"]]  # the same run, no second one
    _complete(client, summary["run_id"])
