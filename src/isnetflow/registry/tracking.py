"""MLflow tracking set-up shared by the stages.

* :func:`use_tracking` -- point the fluent API at a store and an experiment for the rest of the process
  (the classifier stages);
* :func:`scoped_tracking` -- point it at a store for one block and restore the previous state afterwards
  (the lung-segmenter stage, loading a segmenter from MLflow);
* :func:`get_or_create_experiment` -- the experiment both use; a local SQLite store keeps its artifacts
  beside the database (:func:`sqlite_artifact_root`), never in the working directory;
* :func:`is_mlflow_uri` -- whether a model reference is for MLflow to resolve (:data:`MLFLOW_URI_SCHEMES`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "MLFLOW_URI_SCHEMES",
    "EpochMetrics",
    "default_tracking_uri",
    "flatten",
    "get_or_create_experiment",
    "is_mlflow_uri",
    "scoped_tracking",
    "sqlite_artifact_root",
    "use_tracking",
]

DEFAULT_HOME = Path(".isnetflow")

#: Prefixes of the model references MLflow resolves rather than the local file system:
#: ``models:/<name>/<version>`` and ``models:/<name>@<alias>`` (the model registry), ``runs:/<run_id>/<path>``
#: (a run's artifacts), ``mlflow-artifacts:/`` (artifacts proxied by a tracking server), and the artifact
#: stores MLflow reads directly: ``s3://`` (S3, MinIO), ``gs://`` (Google Cloud Storage), ``wasbs://``
#: (Azure Blob Storage) and ``dbfs:/`` (Databricks).
MLFLOW_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://", "wasbs://", "dbfs:/")


def is_mlflow_uri(uri: str) -> bool:
    """True when ``uri`` starts with one of :data:`MLFLOW_URI_SCHEMES` (MLflow loads it, not a path)."""
    return uri.startswith(MLFLOW_URI_SCHEMES)


def default_tracking_uri(home: str | Path = DEFAULT_HOME) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a local SQLite store under ``home`` (the demo default)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def sqlite_artifact_root(tracking_uri: str) -> Path | None:
    """The ``mlartifacts`` folder beside a local SQLite store's database; None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"


def get_or_create_experiment(
    client: MlflowClient, name: str, *, artifact_root: str | Path | None = None
) -> str:
    """The id of experiment ``name``, created with its artifacts at ``artifact_root`` when it is new
    (None: the store's default). Creating it concurrently with another process is not an error."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = Path(artifact_root).resolve().as_uri() if artifact_root is not None else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created concurrently
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def use_tracking(
    tracking_uri: str | None, experiment: str, *, artifact_root: str | Path | None = None
) -> str:
    """Point mlflow at ``tracking_uri`` (default: :func:`default_tracking_uri`) and an experiment.

    For a local SQLite store the experiment's artifacts go to ``artifact_root`` (default: an
    ``mlartifacts`` folder beside the database, :func:`sqlite_artifact_root`), so no artifact ever lands in
    the working directory. Returns the experiment id.
    """
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    root = artifact_root if artifact_root is not None else sqlite_artifact_root(uri)
    exp_id = get_or_create_experiment(mlflow.MlflowClient(), experiment, artifact_root=root)
    mlflow.set_experiment(experiment)
    return exp_id


@contextmanager
def scoped_tracking(uri: str) -> Iterator[MlflowClient]:
    """Point the fluent MLflow API (and a client) at ``uri`` for the block, then restore the previous
    state. ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``; that is restored too. Unlike
    :func:`use_tracking` it sets no active experiment: name one per run (``experiment_id=``)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient(tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None unsets (MLflow 3 behaviour)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b": "value"}`` strings for ``mlflow.log_params`` (500-char limit)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = str(v)[:500]
    return out


class EpochMetrics:
    """Per-epoch metrics sent to an MLflow run from a background thread, in order, until they are in.

    A training must not stop, or wait minutes, because its tracking server is down for a while (a restart,
    a network blip): :meth:`log` only queues; a thread sends each epoch with ``MlflowClient.log_batch``
    (MLflow's own HTTP retries first), and when that still fails it keeps the epoch, warns once per outage
    and tries again every ``retry_s`` seconds. :meth:`close` waits up to ``wait_s`` for the queue to drain
    and returns the epochs still unsent (empty when all arrived): the caller decides what that means.
    """

    def __init__(self, run_id: str, *, retry_s: float = 5.0) -> None:
        """Start the sending thread for MLflow run ``run_id``."""
        import queue
        import threading

        from mlflow import MlflowClient

        self.run_id = run_id
        self.retry_s = retry_s
        self._client = MlflowClient()
        self._queue: queue.Queue[tuple[int, dict[str, float]] | None] = queue.Queue()
        self._pending: list[tuple[int, dict[str, float]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlflow-epoch-metrics", daemon=True)
        self.outages = 0
        self._thread.start()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Queue ``metrics`` at ``step`` for sending; returns at once."""
        self._queue.put((step, {k: float(v) for k, v in metrics.items()}))

    def _send(self, step: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key=k, value=v, timestamp=now, step=step) for k, v in metrics.items()]
        self._client.log_batch(self.run_id, metrics=batch)

    def _run(self) -> None:
        import logging
        import queue

        log = logging.getLogger(__name__)
        down = False
        while True:
            try:
                item = self._queue.get(timeout=self.retry_s if self._pending else None)
            except queue.Empty:
                item = None
            else:
                if item is None:  # close(): drain what is pending, then stop
                    self._stop.set()
                else:
                    with self._lock:
                        self._pending.append(item)
            while self._pending:
                step, metrics = self._pending[0]
                try:
                    self._send(step, metrics)
                except Exception as exc:  # the server is unreachable or refuses: keep the epoch, retry later
                    if not down:
                        down, self.outages = True, self.outages + 1
                        log.warning("MLflow unreachable (%s): keeping the metrics of epoch %d on, training "
                                    "goes on", str(exc).splitlines()[0][:200], step)  # fmt: skip
                    break
                with self._lock:
                    self._pending.pop(0)
                if down:
                    down = False
                    log.warning("MLflow reachable again: the metrics kept during the outage are logged")
            if self._stop.is_set() and (not self._pending or self._deadline_passed()):
                return

    _deadline: float = 0.0

    def _deadline_passed(self) -> bool:
        import time

        return time.monotonic() >= self._deadline

    def close(self, wait_s: float = 300.0) -> list[int]:
        """Stop after the queue drained or ``wait_s`` passed; the epochs that could not be logged."""
        import time

        self._deadline = time.monotonic() + wait_s
        self._queue.put(None)
        self._thread.join(wait_s + self.retry_s + 5)
        with self._lock:
            unsent = [step for step, _ in self._pending]
        while not self._queue.empty():  # queued after close() was called: none in practice
            item = self._queue.get_nowait()
            if item is not None:
                unsent.append(item[0])
        return unsent
