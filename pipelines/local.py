"""Run the training pipeline on this machine with kfp.local (SubprocessRunner), behind ``isnetflow run``.

After the run, :func:`run_local` reads the tasks' artifacts under the pipeline root and returns the run
summary (stable keys: ``models.{isnet,standard}.{internal_auc,external_auc,background_relevance}``,
``promotion.{decision,model_uri}``, ``wall_seconds``, ``log``; ``data_check`` holds the retraining data
check's decision when it ran; ``models.<mode>.standard_comparison`` the do-no-harm gate's one line).

kfp.local writes everything to the terminal: each task's streamed output, its executor inputs and
outputs (the ROC points of a ClassificationMetrics artifact among them) and, on failure, the task's
traceback. Here that output goes to ``pipeline.log`` in the run folder instead (``verbose`` also echoes
it). ``progress`` hears of each task's start and end, and a failed task raises :class:`PipelineFailed`
with the task, the stage's one-line error and the log's path.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from kfp import local

from isnetflow.artifacts.evaluation import EVALUATION_FILE, EvaluationReport
from isnetflow.artifacts.training import TRAIN_SUMMARY_FILE, TrainSummary
from isnetflow.artifacts.validation import ValidationSummary
from isnetflow.config import Settings
from isnetflow.evaluation.gates import standard_line, summary_values
from isnetflow.registry.tracking import resolve_tracking_uri
from isnetflow.tasks import GATES_FILE, INGEST_FILE, DataArtifact, read_json
from isnetflow_kfp.pipelines.training import training_pipeline

#: kfp.local task names -> what the progress lines call them (tasks keep their component's name; the
#: second of two tasks of one component gets "-2": the pipeline trains the ISNet before the standard
#: model, and evaluates the standard model first: the ISNet's do-no-harm gate needs its evaluation).
TASK_LABELS = {
    "ingest": "ingest + validate",
    "data-changed": "data changed?",
    "lung-masks": "lung masks",
    "train-model": "train ISNet",
    "train-model-2": "train standard",
    "evaluate-model": "evaluate standard",
    "evaluate-model-2": "evaluate ISNet",
    "promote-model": "promote ISNet",
    # the distributed branch (train_gpus > 1: TrainJobs, a cluster only)
    "train-model-distributed": "train ISNet (TrainJob)",
    "train-model-distributed-2": "train standard (TrainJob)",
    "evaluate-model-3": "evaluate standard",
    "evaluate-model-4": "evaluate ISNet",
    "promote-model-2": "promote ISNet",
}
LOG_FILE = "pipeline.log"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_START = re.compile(r"Executing task '([^']+)'")
_END = re.compile(r"Task '([^']+)' finished with status (SUCCESS|FAILURE)")
_ERROR = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit)): (.+)$")


class PipelineFailed(RuntimeError):
    """A pipeline task failed: ``task`` (its label), ``error`` (the stage's one-line message) and
    ``log`` (the full kfp log)."""

    def __init__(self, task: str, error: str, log: Path | None) -> None:
        """Keep ``task``, ``error`` and ``log``; the message names the task and its error."""
        self.task, self.error, self.log = task, error, log
        super().__init__(f"task {task} failed: {error}")


class _TaskStream(io.TextIOBase):
    """Stands in for stdout/stderr during the kfp run: every line goes to the log (and to ``echo``
    when verbose); task starts and ends become progress events; a task's last exception line is kept
    as its error."""

    def __init__(
        self,
        log: TextIO,
        echo: TextIO | None,
        on_start: Callable[[str], None],
        on_end: Callable[[str, bool, float], None],
    ) -> None:
        self.log, self.echo = log, echo
        self.on_start, self.on_end = on_start, on_end
        self.started: dict[str, float] = {}
        self.task_errors: dict[str, str] = {}
        self.current: str | None = None
        self.failed: str | None = None
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        if self.echo is not None:
            self.echo.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        if self.echo is not None:
            self.echo.flush()

    def _line(self, line: str) -> None:
        if m := _START.search(line):
            self.current = m.group(1)
            self.started.setdefault(self.current, time.perf_counter())  # retries: time since the first try
            self.on_start(self.current)
        elif m := _END.search(line):
            task, ok = m.group(1), m.group(2) == "SUCCESS"
            if not ok:
                self.failed = task
            self.on_end(task, ok, time.perf_counter() - self.started.get(task, time.perf_counter()))
        elif self.current is not None and (m := _ERROR.match(line)):
            cls, message = m.group(1), m.group(2).strip()
            name = cls.rsplit(".", 1)[-1]
            own = cls.startswith("isnetflow.") or name.endswith(("StageError", "DataError"))
            self.task_errors[self.current] = message if own else f"{name}: {message}"


def task_label(task: str) -> str:
    """What the progress lines call kfp.local task ``task`` (:data:`TASK_LABELS`; else its own name)."""
    return TASK_LABELS.get(task, task)


#: ``progress(label, None, True)`` when a task starts, ``progress(label, seconds, ok)`` when it ends.
Progress = Callable[[str, float | None, bool], None]


@contextlib.contextmanager
def _captured(log_path: Path, verbose: bool, progress: Progress | None) -> Iterator[_TaskStream]:
    def on_start(task: str) -> None:
        if progress is not None and not verbose:
            progress(task_label(task), None, True)

    def on_end(task: str, ok: bool, seconds: float) -> None:
        if progress is not None and not verbose:
            progress(task_label(task), seconds, ok)

    root_logger = logging.getLogger()
    saved = root_logger.handlers[:]
    with log_path.open("w", encoding="utf-8") as log:
        stream = _TaskStream(log, sys.stdout if verbose else None, on_start, on_end)
        # kfp also logs outside its own logging context (skipped conditions, the workspace clean-up)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
        root_logger.handlers = [handler]
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield stream
        finally:
            root_logger.handlers = saved
            stream.write("\n")


def _get(d: dict[str, Any], *names: str) -> Any:
    for k in names:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _confound(validation: ValidationSummary | dict[str, Any]) -> dict[str, Any] | None:
    """The site/label confound the validation found (one line, and whether it warns or fails), or None."""
    balance = ValidationSummary.of(validation).class_balance
    if balance is None or not balance.line:
        return None
    return {"line": balance.line, "action": balance.confound, "sites": list(balance.confounded or {})}


def collect_summary(run_dir: Path, tracking_uri: str, wall: float) -> dict[str, Any]:
    """The run summary from the artifacts of one pipeline run."""
    data = DataArtifact.read(next(run_dir.rglob(INGEST_FILE)).parent)
    ingest = data.info
    models: dict[str, Any] = {}
    for summary_file in run_dir.rglob(TRAIN_SUMMARY_FILE):
        s = TrainSummary.read(summary_file)
        models[str(s.mode)] = {"model_uri": s.model_uri, "run_id": s.run_id, "best_val_auc": s.best_val_auc}
        if "ce_below_half_epoch" in s.model_fields_set:  # when it learned (absent from older summaries)
            models[str(s.mode)] |= {"ce_below_half_epoch": s.ce_below_half_epoch,
                                    "learned_early": s.learned_early}  # fmt: skip
    for ev_file in run_dir.rglob(EVALUATION_FILE):
        ev = EvaluationReport.read_from(ev_file)
        mode = ev.mode
        if mode not in models:
            continue
        gates = read_json(ev_file.parent / GATES_FILE) if (ev_file.parent / GATES_FILE).exists() else {}
        external = ev.external_pooled
        models[mode].update(
            {
                "internal_auc": ev.internal_test.auc,
                "external_auc": external.auc,
                "external_auc_ci": [external.auc_ci_low, external.auc_ci_high],
                **summary_values(ev),  # the gates' values shown in the summary table
                "gates_passed": gates.get("all_gates_passed"),
                "gates": {g["name"]: g.get("passed") for g in gates.get("gates", [])},
                # the do-no-harm gate's one line (against the standard model of this run)
                "standard_comparison": standard_line(gates.get("gates", [])),
                "report": str(ev_file.parent / "report.html"),
            }
        )
    checks = [p for p in run_dir.rglob("data_check") if p.is_file()]
    data_check = read_json(checks[0]) if checks else None
    promotion: dict[str, Any] = {"decision": "rejected", "model_uri": None, "candidate": "isnet"}
    decisions = [p for p in run_dir.rglob("decision") if p.is_file()]
    if decisions:
        d = read_json(decisions[0])
        promotion.update(
            {"decision": d.get("decision"), "model_uri": d.get("model_uri"), "reason": d.get("reason")}
        )
    elif _get(models, "isnet", "gates_passed") is False:
        failed = [k for k, v in models["isnet"]["gates"].items() if v is False]
        promotion["reason"] = f"gates failed: {', '.join(failed)}"
    elif data_check is not None and not data_check.get("proceed", True):
        promotion.update({"decision": "skipped", "reason": f"no training: {data_check.get('reason')}"})
    elif not data.passed:
        promotion.update({"decision": "skipped", "reason": f"validation failed: {ingest.reason}"})
    return {
        "pipeline_root": str(run_dir),
        "tracking_uri": tracking_uri,
        "data": {
            "source": ingest.source,
            **data.counts,
            "validation_passed": data.passed,
            "fingerprint": ingest.data_fingerprint,
            "internal_sites": ingest.internal_sites,
            "external_sites": ingest.external_sites,
            "confound": _confound(data.validation),
        },
        "data_check": data_check,
        "models": models,
        "promotion": promotion,
        "wall_seconds": round(wall, 1),
    }


def run_local(
    settings: Settings,
    workdir: str | Path,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: list[str] | None = None,
    tracking_uri: str | None = None,
    skip_if_unchanged: bool = False,
    verbose: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Execute every pipeline task in a subprocess of the current environment; return the run summary.

    Unlike a scheduled run, a local run trains even when the data equals the champion's, unless
    ``skip_if_unchanged``. The kfp output goes to ``<run folder>/pipeline.log`` (the summary's ``log``)
    and, when ``verbose``, also to the terminal; otherwise ``progress`` hears of each task's start and
    end (:data:`Progress`). A failed task raises :class:`PipelineFailed`.
    """
    workdir = Path(workdir).resolve()
    root = workdir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = resolve_tracking_uri(tracking_uri, workdir)  # `isnetflow run` passes the one it resolved
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    before = {p.name for p in root.iterdir() if p.is_dir()}
    log_path = root / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}-{time.perf_counter_ns() % 10**6}.log"
    t0 = time.perf_counter()
    failure: BaseException | None = None
    with _captured(log_path, verbose, progress) as stream:
        try:
            training_pipeline(
                settings_json=settings.model_dump_json(),
                input_uri=input_uri,
                labels_uri=labels_uri,
                external_sites_json=json.dumps(external_sites or []),
                tracking_uri=tracking_uri,
                skip_if_unchanged=skip_if_unchanged,
            )
        except RuntimeError as exc:  # kfp.local: "Task ... finished with status FAILURE"
            failure = exc
    wall = time.perf_counter() - t0
    new = [p for p in root.iterdir() if p.is_dir() and p.name not in before]
    run_dir = max(new, key=lambda p: p.stat().st_mtime) if new else None
    log = log_path
    if run_dir is not None:
        log = run_dir / LOG_FILE
        shutil.move(log_path, log)
    if failure is not None:
        task = stream.failed or stream.current or "?"
        error = stream.task_errors.get(task) or _ANSI.sub("", str(failure)).splitlines()[0]
        raise PipelineFailed(task_label(task), error, log) from failure
    assert run_dir is not None
    summary = collect_summary(run_dir, tracking_uri, wall)
    summary["log"] = str(log)
    return summary
