"""Pipeline tasks: what each KFP component does, as plain functions over artifact folders.

A component (``components/*.py``) is only an interface: it declares its inputs and outputs, calls the
task of the same name here with the artifacts' local paths and copies the returned
:class:`TaskOutputs` into its KFP outputs (metrics, HTML, metadata, ROC curve). The logic lives here,
where it is typed, linted and tested without kfp; ``pipelines/local.collect_summary`` reads the same
artifacts through the same readers (:class:`DataArtifact`, the typed artifacts of
:mod:`isnetflow.artifacts`, :func:`read_json` for the rest).

This module sits above the stages: a task may run several of them (``evaluate_model`` evaluates, checks
the gates without registering, and records the candidate's outcome for scheduled retraining).

Artifact layout (inside each artifact folder):

* data (ingest): ``ingest.json`` (:data:`INGEST_FILE`), ``validated/``, ``cohort/`` in demo mode;
* masks: ``masks/``;
* model: ``train_summary.json``, ``splits.csv`` (the held-out patient list), ``heatmaps.png`` (the MLflow
  model URI is the artifact's metadata; the evaluation loads the model and its ``splits.csv`` from it);
* evaluation: ``evaluation.json``, ``gates.json`` (:data:`GATES_FILE`), ``report.html`` (with the gate
  results, the do-no-harm line among them, added by :func:`evaluate_model`);
* data_check and decision: one JSON file each (the artifact itself).

MLflow store: a task's ``tracking_uri`` parameter ("" = the pod's ``$MLFLOW_TRACKING_URI``) is resolved
once, on entry, with :func:`~isnetflow.registry.tracking.resolve_tracking_uri`, and the result is passed
down to the stages.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from isnetflow.artifacts.evaluation import EvaluationReport
from isnetflow.artifacts.training import TrainSummary
from isnetflow.artifacts.validation import INGEST_FILE, IngestSummary, ValidationSummary
from isnetflow.config import Settings
from isnetflow.evaluation import keys
from isnetflow.evaluation.gates import STANDARD_GATE
from isnetflow.registry.tracking import resolve_tracking_uri
from isnetflow.viz import images_html

__all__ = [
    "GATES_FILE",
    "INGEST_FILE",
    "MASKS_SUBDIR",
    "DataArtifact",
    "TaskOutputs",
    "data_changed",
    "evaluate_model",
    "ingest",
    "lung_masks",
    "promote_model",
    "read_json",
    "train_model",
    "train_model_distributed",
]

GATES_FILE = "gates.json"
#: the masks artifact holds the mask stage's output folder under this name
MASKS_SUBDIR = "masks"


def read_json(path: str | Path) -> Any:
    """A JSON artifact file, or a one-line error naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: cannot read the pipeline artifact: {exc}") from exc


@dataclass(frozen=True)
class DataArtifact:
    """The data artifact the ingest task writes (``ingest.json``, its
    :class:`~isnetflow.artifacts.validation.IngestSummary`, and the folders it names)."""

    root: Path
    info: IngestSummary

    def __post_init__(self) -> None:
        """Read ``info`` given as a mapping (the ingest stage's return value) as the summary."""
        if not isinstance(self.info, IngestSummary):
            object.__setattr__(self, "info", IngestSummary.of(self.info))

    @classmethod
    def read(cls, root: str | Path) -> DataArtifact:
        """The artifact at ``root``, with its ``ingest.json``."""
        root = Path(root)
        return cls(root, IngestSummary.read_from(root))

    def resolve(self, entry: str | None) -> Path | None:
        """Absolute path of an ``ingest.json`` entry (relative entries lie inside the artifact)."""
        if entry is None:
            return None
        p = Path(entry)
        return p if p.is_absolute() else self.root / p

    @property
    def validated(self) -> Path:
        """The validate stage's output folder (manifest, images)."""
        return self.root / str(self.info.validated)

    @property
    def provided_masks(self) -> Path | None:
        """The lung masks that came with the data (the demo cohort's, or a ``masks/`` beside the labels)."""
        return self.resolve(self.info.provided_masks)

    @property
    def passed(self) -> bool:
        """Whether the data can make a run: validation passed and the site choice works (``ingest.json``)."""
        return bool(self.info.passed)

    @property
    def validation(self) -> ValidationSummary:
        """The validation's summary (empty when not recorded)."""
        return self.info.validation or ValidationSummary()

    @property
    def counts(self) -> dict[str, int]:
        """Files per status (valid / quarantined / ignored)."""
        return {k: self.validation.count(k) for k in ("valid", "quarantined", "ignored")}


@dataclass
class TaskOutputs:
    """What a task hands its component: the return value and the KFP outputs to write."""

    value: Any
    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    html: str | None = None
    #: ``{"fpr", "tpr", "thresholds"}`` and ``{"categories", "matrix"}`` for a ClassificationMetrics output
    roc: dict[str, list[float]] | None = None
    confusion: dict[str, Any] | None = None


def ingest(
    settings_json: str, out: str | Path, input_uri: str, labels_uri: str, external_sites_json: str
) -> TaskOutputs:
    """Validate the input (or the generated cohort) into the data artifact ``out``; value: passed."""
    from isnetflow.stages import ingest as stage

    settings = Settings.model_validate_json(settings_json)
    stage.run(
        settings,
        out,
        input_uri=input_uri,
        labels_uri=labels_uri,
        external_sites=json.loads(external_sites_json or "[]"),
    )
    data = DataArtifact.read(out)
    v = data.validation
    metrics = {"files": float(v.files or 0), "pass_rate": float(v.pass_rate or 0.0)}
    metrics.update({k: float(n) for k, n in data.counts.items()})
    figures = []
    preview = data.resolve(data.info.cohort_preview)
    if preview is not None:
        figures.append(("synthetic cohort: examples per site and class", preview))
    counts = v.counts.model_dump(exclude_unset=True) if v.counts is not None else {}
    note = f"{counts} — pass rate {float(v.pass_rate or 0.0):.3f}; {data.info.reason or 'validation passed'}"
    return TaskOutputs(
        value=data.passed,
        metrics=metrics,
        metadata={"valid": data.counts["valid"], "passed": data.passed},
        html=images_html("Ingest and validation", figures, note=note),
    )


def data_changed(
    settings_json: str, tracking_uri: str, skip_if_unchanged: bool, data: str | Path, out: str | Path
) -> TaskOutputs:
    """Compare the data fingerprint and recipe with the champion's and refused candidates'; value: whether
    the pipeline should train. Writes the decision to ``out``."""
    from isnetflow.stages import retrain

    settings = Settings.model_validate_json(settings_json)
    result = retrain.check_data_changed(
        DataArtifact.read(data).validated,
        resolve_tracking_uri(tracking_uri),
        settings.promote.registered_model,
        skip_if_unchanged=skip_if_unchanged,
        recipe=retrain.recipe_digest(settings),
    )
    Path(out).write_text(json.dumps(result, indent=2))
    return TaskOutputs(
        value=bool(result["proceed"]),
        metadata={k: result[k] for k in ("changed", "decision", "fingerprint", "reason")},
    )


def lung_masks(settings_json: str, tracking_uri: str, data: str | Path, out: str | Path) -> TaskOutputs:
    """Write masks + mask_qc.csv + gallery under ``out``; registers the shipped segmenter when tracking;
    value: the segmenter's model version ("" without tracking)."""
    from isnetflow.stages import masks as stage
    from isnetflow.stages import segmenter

    settings = Settings.model_validate_json(settings_json)
    artifact = DataArtifact.read(data)
    # the shipped segmenter is registered only in a store the pipeline names (as it always was); loading
    # an MLflow masks.model needs a store too, but has no local default
    version = segmenter.register_shipped(tracking_uri) if tracking_uri else ""
    result = stage.run(
        settings.masks,
        artifact.validated,
        out,
        artifact.provided_masks,
        model_version=version or None,
        tracking_uri=resolve_tracking_uri(tracking_uri, None),
    )
    counts = result.summary.get("counts", {})
    return TaskOutputs(
        value=str(version),
        metrics={f"masks_{k}": float(v) for k, v in counts.items() if isinstance(v, int | float)},
        metadata={"segmenter_version": version},
        html=images_html("Lung masks", [("overlays, QC failures first", Path(out) / "gallery.png")]),
    )


def _trained(mode: str, out: str | Path, title: str) -> TaskOutputs:
    """The model artifact ``out``'s outputs, from the ``train_summary.json`` the training wrote into it."""
    summary = TrainSummary.read_from(out)
    numbers = {"best_val_auc": summary.best_val_auc, "best_epoch": summary.best_epoch}
    numbers["wall_seconds"] = summary.wall_seconds
    return TaskOutputs(
        value=str(summary.model_uri),
        metrics={k: math.nan if v is None else float(v) for k, v in numbers.items()},
        metadata={"mlflow_model_uri": summary.model_uri, "mode": mode, "run_id": summary.run_id},
        html=images_html(title, [("LRP relevance, label class", Path(out) / "heatmaps.png")]),
    )


def train_model(
    settings_json: str,
    mode: str,
    tracking_uri: str,
    pipeline_run: str,
    data: str | Path,
    masks: str | Path,
    out: str | Path,
) -> TaskOutputs:
    """Train with ``mode`` (isnet | standard) into the model artifact ``out``; value: the MLflow model URI.

    With ``train.checkpoint_dir`` set, checkpoints go to ``<checkpoint_dir>/<pipeline_run>/<mode>`` and a
    retried task resumes from its own latest checkpoint (a first attempt finds none and starts afresh).
    """
    from isnetflow.stages import train as stage

    settings = Settings.model_validate_json(settings_json)
    cfg = settings.train.model_copy(update={"mode": mode})
    stage.run(
        cfg,
        DataArtifact.read(data).validated,
        Path(masks) / MASKS_SUBDIR,
        out,
        tracking_uri=resolve_tracking_uri(tracking_uri),
        run_name=f"train-{mode}",
        classes=list(settings.validate.classes),
        progress=False,
        resume=cfg.checkpoint_dir is not None,
        checkpoint_scope=pipeline_run,
    )
    return _trained(mode, out, f"{mode}: validation heatmaps")


def train_model_distributed(
    settings_json: str,
    mode: str,
    tracking_uri: str,
    pipeline_run: str,
    gpus: int,
    nodes: int,
    image: str,
    cluster_json: str,
    data: str | Path,
    data_uri: str,
    masks_uri: str,
    out: str | Path,
) -> TaskOutputs:
    """Submit the training of ``mode`` as a Kubeflow Trainer TrainJob on ``gpus`` GPUs over ``nodes``
    nodes and wait for it; value: the MLflow model URI the job logged.

    ``data_uri`` / ``masks_uri`` are the artifacts' remote URIs (the job's pods read them from S3);
    ``cluster_json`` names the Kubernetes objects the pods use (secrets, config keys, labels, service
    account, GPU node selector and toleration), written by the pipeline.
    """
    from isnetflow.stages import train as stage

    cluster = json.loads(cluster_json)
    info = DataArtifact.read(data).info
    stage.run_trainjob(
        settings_json,
        mode,
        f"{data_uri.rstrip('/')}/{info.validated}",
        f"{masks_uri.rstrip('/')}/{MASKS_SUBDIR}",
        out,
        gpus=gpus,
        nodes=nodes,
        image=image,
        pipeline_run=pipeline_run,
        # not resolved here: the job's pods resolve it in their own `isnetflow train` (a local default
        # resolved in this pod would name this pod's disk); this pod's own lookup resolves None the same way
        tracking_uri=tracking_uri or None,
        # the endpoints this task got from the ConfigMap, as plain values; credentials by Secret reference
        env={k: os.environ[k] for k in cluster["passthrough_env"] if os.environ.get(k)},
        env_from_secrets={k: (s, key) for k, (s, key) in cluster["secret_env"].items()},
        pod_labels=cluster["pod_labels"],
        service_account=cluster["service_account"],
        node_selector=cluster["node_selector"],
        tolerations=cluster["tolerations"],
    )
    outputs = _trained(mode, out, f"{mode}: validation heatmaps ({gpus} GPUs)")
    outputs.metrics["gpus"] = float(gpus)
    trainjob = TrainSummary.read_from(out).trainjob
    outputs.metadata["trainjob"] = None if trainjob is None else trainjob.name
    return outputs


def _baseline(settings: Settings, baseline: str | Path | None, candidate: bool) -> Path | None:
    """The standard model's ``evaluation.json`` in the evaluation artifact ``baseline`` ("" / None: none).

    The pipeline's candidate always has one while the do-no-harm gate is enabled: without it the gate
    would pass as not applicable, so its absence is an error here, not a pass.
    """
    if baseline:
        path = Path(baseline) / keys.EVALUATION_FILE
        read_json(path)  # a missing or damaged artifact: one line naming the file
        return path
    if candidate and settings.promote.max_auc_drop_vs_standard is not None:
        raise ValueError(
            "the candidate's do-no-harm gate (standard_auc_delta) needs the evaluation of the standard "
            "model trained beside it: pass the baseline evaluation artifact"
        )
    return None


def _promote(
    settings: Settings,
    model_uri: str,
    evaluation_dir: str | Path,
    tracking_uri: str,
    mask_model_version: str,
    validated: Path,
    masks_dir: Path,
    **options: Any,
) -> dict[str, Any]:
    """The promote stage on the evaluation in ``evaluation_dir``, with the pipeline's data and settings
    (``options``: ``dry_run`` for the gate check, ``recipe`` for the registration, ``baseline`` for the
    do-no-harm gate)."""
    from isnetflow.stages import promote

    return promote.run(
        settings.promote,
        model_uri,
        evaluation=Path(evaluation_dir) / keys.EVALUATION_FILE,
        tracking_uri=tracking_uri,
        mask_model_version=mask_model_version,
        data=validated,
        masks=masks_dir,
        evaluate_cfg=settings.evaluate,
        train_fallback=settings.train,
        **options,
    )


def evaluate_model(
    settings_json: str,
    tracking_uri: str,
    mask_model_version: str,
    candidate: bool,
    data: str | Path,
    masks: str | Path,
    model_uri: str,
    out: str | Path,
    baseline: str | Path | None = None,
) -> TaskOutputs:
    """Evaluate ``model_uri`` into ``out``, then check the promotion gates without registering (dry run,
    written to ``out/gates.json`` and added to ``out/report.html``); value: all gates passed.

    ``baseline``: the evaluation artifact of the standard model trained beside ``model_uri`` in the same
    run, for the do-no-harm gate (required for the ``candidate`` while that gate is enabled; the standard
    model's own check gets none: not applicable).

    For the pipeline's ``candidate`` (the model promotion would register) the gate outcome is also
    recorded for scheduled retraining: a refused candidate is not retrained on the same data and recipe.
    """
    from isnetflow.evaluation.report import with_gates
    from isnetflow.stages import evaluate, retrain

    settings = Settings.model_validate_json(settings_json)
    tracking_uri = resolve_tracking_uri(tracking_uri)
    standard = _baseline(settings, baseline, candidate)
    validated = DataArtifact.read(data).validated
    masks_dir = Path(masks) / MASKS_SUBDIR
    evaluate.run(
        settings.evaluate,
        model_uri,
        validated,
        masks_dir,
        out,
        tracking_uri=tracking_uri,
        train_fallback=settings.train,
        progress=False,
    )
    decision = _promote(
        settings, model_uri, out, tracking_uri, mask_model_version, validated, masks_dir,
        dry_run=True, baseline=standard,
    )  # fmt: skip
    (Path(out) / GATES_FILE).write_text(json.dumps(decision, indent=2, default=str))
    report = Path(out) / "report.html"
    report.write_text(with_gates(report.read_text(), decision["gates"]))
    passed = bool(decision["all_gates_passed"])
    if candidate:
        retrain.record_candidate_outcome(
            validated,
            tracking_uri,
            settings.promote.registered_model,
            recipe=retrain.recipe_digest(settings),
            all_gates_passed=passed,
            failed_gates=[g["name"] for g in decision["gates"] if not g["passed"]],
            candidate_uri=model_uri,
        )
    evaluation = EvaluationReport.read_from(out)
    metrics: dict[str, float] = {}
    for split in (keys.INTERNAL_TEST, keys.EXTERNAL_POOLED):
        auc = evaluation.split(split).auc
        if auc is not None:
            metrics[f"{split}_auc"] = float(auc)
    if evaluation.background_share is not None:
        metrics["background_share"] = evaluation.background_share
    delta = next((g["value"] for g in decision["gates"] if g["name"] == STANDARD_GATE), None)
    if delta is not None:
        metrics["auc_delta_vs_standard"] = float(delta)
    outputs = TaskOutputs(value=passed, metrics=metrics, html=report.read_text())
    cm = (evaluation.classification_metrics or {}).get(keys.EXTERNAL_POOLED)
    # absent when the external set holds a single class (no ROC curve exists)
    if cm is not None and cm.roc is not None and cm.confusion_matrix is not None:
        outputs.roc = cm.roc.model_dump(include={"fpr", "tpr", "thresholds"})
        outputs.confusion = cm.confusion_matrix.model_dump(include={"categories", "matrix"})
    return outputs


def promote_model(
    settings_json: str,
    tracking_uri: str,
    mask_model_version: str,
    data: str | Path,
    masks: str | Path,
    model_uri: str,
    evaluation: str | Path,
    out: str | Path,
    baseline: str | Path | None = None,
) -> TaskOutputs:
    """Register with gate and lineage tags; ``champion`` moves only if every gate passes. Writes the
    decision to ``out``; value: the registered model URI ("" when refused before registering).

    ``baseline``: the standard model's evaluation artifact of the same run (the do-no-harm gate is
    checked again here, as every gate; required while that gate is enabled)."""
    from isnetflow.stages import retrain

    settings = Settings.model_validate_json(settings_json)
    tracking_uri = resolve_tracking_uri(tracking_uri)
    standard = _baseline(settings, baseline, candidate=True)
    validated, masks_dir = DataArtifact.read(data).validated, Path(masks) / MASKS_SUBDIR
    result = _promote(
        settings, model_uri, evaluation, tracking_uri, mask_model_version, validated, masks_dir,
        recipe=retrain.recipe_digest(settings), baseline=standard,
    )  # fmt: skip
    Path(out).write_text(json.dumps(result, indent=2, default=str))
    return TaskOutputs(value=str(result.get("model_uri", "")))
