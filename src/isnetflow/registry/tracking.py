"""MLflow tracking set-up: the one place that reads ``$MLFLOW_TRACKING_URI`` and points MLflow at a store.

* :func:`resolve_tracking_uri` -- the store to use: an explicit value, else ``$MLFLOW_TRACKING_URI``, else
  a local SQLite store (the command's documented default). The commands, the KFP task functions
  (:mod:`isnetflow.tasks`) and the bench commands call it once, at their edge, and pass the result down as
  a plain ``tracking_uri`` argument;
* :func:`use_tracking` -- point the fluent API at a store and an experiment for the rest of the process
  (a stage that owns its process: train, evaluate, promote, the data check);
* :func:`scoped_tracking` -- point it at a store for one block and restore the previous state afterwards
  (code that runs inside another stage's process or only reads: the lung segmenter's registration and
  loading, ``registry show``, ``promote --rollback``, ``explain``, ``registry kserve``);
* :func:`get_or_create_experiment` -- the experiment both use; a local SQLite store keeps its artifacts
  beside the database (:func:`sqlite_artifact_root`), never in the working directory;
* :func:`is_mlflow_uri` -- whether a model reference is for MLflow to resolve (:data:`MLFLOW_URI_SCHEMES`).

Nothing else in the package calls ``mlflow.set_tracking_uri`` (``tests/unit/registry/test_tracking.py``
checks it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "DEFAULT_HOME",
    "ENV_VAR",
    "MLFLOW_URI_SCHEMES",
    "EpochMetrics",
    "flatten",
    "get_or_create_experiment",
    "is_mlflow_uri",
    "resolve_tracking_uri",
    "scoped_tracking",
    "sqlite_artifact_root",
    "use_tracking",
]

#: Where the local SQLite store lives when nothing names a store: ``sqlite:///.isnetflow/mlflow.db``,
#: relative to the working directory (``isnetflow run`` and ``bench seeds`` use their ``--workdir``,
#: ``train-segmenter`` its ``--out``).
DEFAULT_HOME = Path(".isnetflow")
#: The environment variable naming the store (MLflow's own).
ENV_VAR = "MLFLOW_TRACKING_URI"

#: Prefixes of the model references MLflow resolves rather than the local file system:
#: ``models:/<name>/<version>`` and ``models:/<name>@<alias>`` (the model registry), ``runs:/<run_id>/<path>``
#: (a run's artifacts), ``mlflow-artifacts:/`` (artifacts proxied by a tracking server), and the artifact
#: stores MLflow reads directly: ``s3://`` (S3, MinIO), ``gs://`` (Google Cloud Storage), ``wasbs://``
#: (Azure Blob Storage) and ``dbfs:/`` (Databricks).
MLFLOW_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://", "wasbs://", "dbfs:/")


def is_mlflow_uri(uri: str) -> bool:
    """True when ``uri`` starts with one of :data:`MLFLOW_URI_SCHEMES` (MLflow loads it, not a path)."""
    return uri.startswith(MLFLOW_URI_SCHEMES)


@overload
def resolve_tracking_uri(explicit: str | None = None, home: str | Path = DEFAULT_HOME) -> str: ...
@overload
def resolve_tracking_uri(explicit: str | None, home: None) -> str | None: ...
def resolve_tracking_uri(explicit: str | None = None, home: str | Path | None = DEFAULT_HOME) -> str | None:
    """The MLflow tracking URI to use: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite
    store ``sqlite:///<home>/mlflow.db`` (``home`` made absolute and created; default ``.isnetflow``).

    An empty string counts as not given, for ``explicit`` and the variable alike (a pipeline parameter's
    ``""`` means "the pods' ``MLFLOW_TRACKING_URI``"). ``home=None``: no local default, None when neither
    is given (a command that tracks only when asked to, or needs a store only for an MLflow model URI).
    """
    if explicit:
        return explicit
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    if home is None:
        return None
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
    """Point mlflow at ``tracking_uri`` and an experiment, for the rest of the process.

    The commands and tasks pass the URI they resolved (:func:`resolve_tracking_uri`); None (a library
    caller that names no store) is resolved here the same way. For a local SQLite store the experiment's
    artifacts go to ``artifact_root`` (default: an ``mlartifacts`` folder beside the database,
    :func:`sqlite_artifact_root`), so no artifact ever lands in the working directory. Returns the
    experiment id.
    """
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    root = artifact_root if artifact_root is not None else sqlite_artifact_root(uri)
    exp_id = get_or_create_experiment(mlflow.MlflowClient(), experiment, artifact_root=root)
    mlflow.set_experiment(experiment)
    return exp_id


@contextmanager
def scoped_tracking(uri: str | None) -> Iterator[MlflowClient]:
    """Point the fluent MLflow API (and a client) at ``uri`` for the block, then restore the previous
    state. ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``; that is restored too. None is
    resolved as in :func:`use_tracking`.

    Why both idioms: :func:`use_tracking` suits a stage that owns its process (a command, a KFP task) and
    logs runs to one experiment; this one suits code that runs inside such a process and must not move
    its tracking (the segmenter registered or loaded by the lung-mask task) or only reads the registry.
    It sets no active experiment and creates none: name one per run (``experiment_id=``)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(uri)
    before = os.environ.get(ENV_VAR)
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient(tracking_uri=uri)
    finally:
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None unsets (MLflow 3 behaviour)
        if before is None:
            os.environ.pop(ENV_VAR, None)


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
