"""Train stage: validated images + lung masks -> a trained classifier tracked in MLflow.

Inputs: the ingest output (``manifest.csv`` + normalized ``images/``) and a folder of lung masks
``<SOPInstanceUID>.png`` (0/255) at each image's original resolution (the mask stage's output, or
ground-truth masks), optionally with the mask stage's QC table (``mask_qc.csv``): images whose mask was
quarantined are left out of training *in both modes*, so ISNet and baseline see the same data.

Outputs under ``out``: ``model.pt`` (the whole module, pickled), ``train_summary.json``,
``splits.csv`` (the patient split: every internal patient's train / val / test; its SHA-256 is the run
parameter ``data.splits_sha256`` and the summary's ``splits_sha256``, see
:mod:`isnetflow.training.splitfile`), ``heatmaps.png`` (validation heatmap overlays), ``history.csv``
(per-epoch metrics and diagnostics) and ``learning_curves.png``; the same plus the model go to an
MLflow run (the model with ``serialization_format="pickle"`` so that it loads back as an
``nn.Module`` that accepts any batch size and works with :func:`isnetflow.lrp.relevance`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from isnetflow import __version__
from isnetflow.artifacts.training import CE_LEARNED, TRAIN_SUMMARY_FILE, TrainJobInfo, TrainSummary
from isnetflow.config import TrainConfig
from isnetflow.names import EXPERIMENT
from isnetflow.registry.lineage import log_manifest_input
from isnetflow.registry.tracking import EpochMetrics, flatten, use_tracking
from isnetflow.training.checkpoint import CheckpointStore, scoped_location
from isnetflow.training.data import TrainData
from isnetflow.training.distributed import distributed_env
from isnetflow.training.inputs import load_train_data
from isnetflow.training.loop import TrainResult, train
from isnetflow.training.splitfile import SPLITS_FILE, held_out_rows, write_splits
from isnetflow.validation.manifest import manifest_sha256
from isnetflow.viz.curves import learning_curves
from isnetflow.viz.heatmaps import heatmap_gallery

log = logging.getLogger(__name__)

__all__ = [
    "TrackingUnavailable",
    "run",
    "run_trainjob",
    "save_heatmaps",
    "train_local",
]


def save_heatmaps(
    model: torch.nn.Module,
    data: TrainData,
    indices: np.ndarray,
    png: Path,
    *,
    title: str,
    epsilon: float = 0.01,
) -> Path:
    """LRP heatmaps (for the label class) of ``indices`` with lung outlines and predictions."""
    from isnetflow.lrp import relevance
    from isnetflow.nets import predict_proba

    idx = indices[:8]
    x, m, y = data.images[idx], data.masks[idx], data.labels[idx]
    device = next(model.parameters()).device
    rel = relevance(model.eval(), x.to(device), y.to(device), epsilon=epsilon).cpu().numpy()[:, 0]
    proba = predict_proba(model, x, batch_size=8)  # the (at most) 8 images in one batch
    titles = [
        f"{data.sites[i][:18]}\n{data.classes[int(y[k])]} p={proba[k, int(y[k])]:.2f}"
        for k, i in enumerate(idx)
    ]
    return heatmap_gallery(x.numpy()[:, 0], rel, m.numpy()[:, 0], titles, png, suptitle=title)


#: the checkpoint store's note naming the MLflow run its checkpoints belong to
RUN_NOTE = "mlflow_run_id"


def _resumable_run(store: CheckpointStore) -> str | None:
    """The MLflow run of the checkpoints in ``store``, if it exists and did not finish."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = store.read_text(RUN_NOTE)
    if not run_id:
        return None
    try:
        status = mlflow.get_run(run_id).info.status
    except MlflowException:
        log.warning("checkpoints name MLflow run %s, which this tracking server does not have", run_id)
        return None
    return run_id if status != "FINISHED" else None


def _is_remote(location: str | Path | None) -> bool:
    return location is not None and str(location).startswith(("s3://", "minio://"))


class TrackingUnavailable(RuntimeError):
    """The MLflow server could not be reached when the run had to be recorded (message says how to resume)."""


def _tracking_errors() -> tuple[type[BaseException], ...]:
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException, OSError)


TRACKING_ERRORS = _tracking_errors()


def _unreachable(exc: BaseException, cfg: TrainConfig, out: Path) -> str:
    import mlflow

    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    where = f"MLflow at {mlflow.get_tracking_uri()} is unreachable after training ({first})"
    if cfg.checkpoint_dir:
        return (f"{where}: the trained state is checkpointed at {cfg.checkpoint_dir}; rerun the same command "
                f"with --resume to record the run")  # fmt: skip
    return f"{where}: the model is at {out / 'model.pt'}; set train.checkpoint_dir to make a run resumable"


def _backfill_epochs(run_id: str, history: list[dict[str, float]]) -> int:
    """Log the epochs of ``history`` the run lacks (kept during an outage, or trained before a resume and
    never logged); returns how many. Every epoch logs ``lr``, so its absence marks a missing epoch."""
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient()
    logged = {m.step for m in client.get_metric_history(run_id, "lr")}
    missing = [h for h in history if int(h["epoch"]) not in logged]
    now = int(time.time() * 1000)
    for h in missing:
        batch = [Metric(key=k, value=float(v), timestamp=now, step=int(h["epoch"]))
                 for k, v in h.items() if k != "epoch" and np.isfinite(v)]  # fmt: skip
        client.log_batch(run_id, metrics=batch)
    return len(missing)


def _tracked_training(
    cfg: TrainConfig,
    data: TrainData,
    validated: str | Path,
    out: Path,
    active: Any,
    previous: str | None,
    store: CheckpointStore | None,
    counts: dict[str, int],
    world_size: int,
    *,
    resume: bool,
    progress: bool,
    tracking_wait_s: float,
) -> dict[str, Any]:
    """Inside the run: parameters, the training with its per-epoch metrics, the local outputs, then the
    run's artifacts and model. The per-epoch metrics go through :class:`EpochMetrics`, so an MLflow
    outage during training neither stops it nor loses an epoch; what the outage kept is logged at the end
    (:func:`_backfill_epochs`). When MLflow is still unreachable then, :class:`TrackingUnavailable` names
    the checkpoint to resume from: a resume records the same run."""
    import mlflow
    import mlflow.pytorch

    params = flatten(cfg.model_dump(mode="json"))
    params |= {f"data.{k}": str(v) for k, v in counts.items()} | {"data.classes": ",".join(data.classes)}
    params["train.processes"] = str(world_size)
    # the held-out patient list is an artifact: written before training, its digest a run parameter
    stored = write_splits(held_out_rows(data.patient_ids, data.sites, data.splits), out)
    params["data.splits_sha256"] = stored.sha256
    if previous:
        log.info("resuming MLflow run %s", previous)
        mlflow.set_tag("isnetflow.resumed", "true")
        logged = active.data.params
        # MLflow params are immutable: a setting the resume changed (e.g. more epochs) becomes a tag
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        mlflow.set_tags({f"resume.{k}": v for k, v in params.items() if k in logged and logged[k] != v})
    else:
        if store is not None:
            store.write_text(RUN_NOTE, active.info.run_id)
        log_manifest_input(validated, "training")
        mlflow.log_params(params)

    epoch_metrics = EpochMetrics(active.info.run_id)

    def on_epoch(epoch: int, metrics: dict[str, float], model: torch.nn.Module) -> None:
        epoch_metrics.log(epoch, {k: v for k, v in metrics.items() if np.isfinite(v)})

    try:
        result: TrainResult = train(cfg, data, resume=resume, on_epoch=on_epoch, progress=progress)
    finally:
        unsent = epoch_metrics.close(wait_s=tracking_wait_s)
    if unsent:
        log.warning("MLflow did not take the metrics of epoch(s) %s yet: trying once more", unsent)

    # the local outputs first: they never depend on the tracking server
    png = save_heatmaps(
        result.model,
        data,
        data.indices("val"),
        out / "heatmaps.png",
        title=f"{cfg.mode}: LRP relevance for the label class (validation)",
        epsilon=cfg.heatmap.epsilon,
    )
    pd.DataFrame(result.history).to_csv(out / "history.csv", index=False)
    curves = learning_curves(
        result.history, out / "learning_curves.png", title=f"{cfg.mode}: learning curves"
    )
    model_cpu = result.model.to("cpu").eval()
    torch.save(model_cpu, out / "model.pt")
    learned = result.milestones()
    if learned["ce_below_half_epoch"] is None:
        last = float(result.history[-1].get("train_ce", "nan")) if result.history else float("nan")
        log.warning(
            "%s: the training cross-entropy never fell below %.1f (last epoch %.3f): the model has not "
            "learned the disease, whatever its heatmaps show; see %s",
            cfg.mode, CE_LEARNED, last, curves,
        )  # fmt: skip
    summary = TrainSummary(
        mode=cfg.mode,
        run_id=active.info.run_id,
        model_uri=f"runs:/{active.info.run_id}/model",
        logged_model_uri=None,
        best_epoch=result.best_epoch,
        best_val_auc=result.best_val_auc,
        C1=result.c1,
        C2=result.c2,
        global_steps=result.global_steps,
        ce_below_half_epoch=learned["ce_below_half_epoch"],
        learned_early=learned["learned_early"],
        wall_seconds=result.wall_seconds,
        device=result.device,
        processes=world_size,
        splits=counts,
        splits_file=SPLITS_FILE,
        splits_sha256=stored.sha256,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        classes=data.classes,
        image_size=cfg.image_size,
        model=cfg.model,
        local_model=str(out / "model.pt"),
        tracking_outages=epoch_metrics.outages,
    )
    try:
        backfilled = _backfill_epochs(active.info.run_id, result.history)
        if backfilled:
            log.info("logged the metrics of %d epoch(s) kept during an outage or trained before a resume",
                     backfilled)  # fmt: skip
        mlflow.log_metrics({"best_val_auc": result.best_val_auc, "best_epoch": float(result.best_epoch)})
        if learned["ce_below_half_epoch"] is not None:
            mlflow.log_metric("ce_below_half_epoch", float(learned["ce_below_half_epoch"]))
        if learned["learned_early"] is not None:
            mlflow.set_tag("isnetflow.learned_early", str(learned["learned_early"]).lower())
        if result.c1 is not None and result.c2 is not None:
            mlflow.log_params({"fitted.C1": f"{result.c1:.6g}", "fitted.C2": f"{result.c2:.6g}"})
        mlflow.log_artifact(str(png), artifact_path="figures")
        mlflow.log_artifact(str(out / "history.csv"))
        mlflow.log_artifact(str(stored.path))
        mlflow.log_artifact(str(curves), artifact_path="figures")
        example = data.images[:2].numpy()
        with torch.no_grad():
            signature = mlflow.models.infer_signature(example, model_cpu(torch.from_numpy(example)).numpy())
        info = mlflow.pytorch.log_model(
            model_cpu,
            name="model",
            serialization_format="pickle",
            signature=signature,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"isnetflow=={__version__}"],
        )
        summary.logged_model_uri = info.model_uri
        mlflow.log_artifact(str(summary.write_to(out)))
    except TRACKING_ERRORS as exc:
        summary.write_to(out)
        raise TrackingUnavailable(_unreachable(exc, cfg, out)) from exc
    return summary.as_json()


def run(
    cfg: TrainConfig,
    validated: str | Path,
    masks: str | Path | None,
    out: str | Path,
    **kwargs: Any,
) -> dict[str, Any]:
    """Train one model (``cfg.mode``) and track it; returns the summary written to ``train_summary.json``.

    ``validated`` and ``masks`` may be local folders or ``s3://`` (KFP: ``minio://``) prefixes: a
    distributed training's pods read the pipeline's artifacts from the object store. Remote folders are
    copied to a temporary folder for the training and removed afterwards. The keyword arguments are
    those of :func:`train_local`.
    """
    if not (_is_remote(validated) or _is_remote(masks)):
        return train_local(cfg, validated, masks, out, **kwargs)
    import tempfile

    from isnetflow.dicom.source import download_tree

    with tempfile.TemporaryDirectory(prefix="isnetflow-train-inputs-") as tmp:
        if _is_remote(validated):
            log.info("copying %s", validated)
            validated = download_tree(str(validated), Path(tmp) / "validated")
        if _is_remote(masks):
            log.info("copying %s", masks)
            masks = download_tree(str(masks), Path(tmp) / "masks")
        return train_local(cfg, validated, masks, out, **kwargs)


def train_local(
    cfg: TrainConfig,
    validated: str | Path,
    masks: str | Path | None,
    out: str | Path,
    *,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    run_name: str | None = None,
    resume: bool = False,
    tags: dict[str, str] | None = None,
    classes: list[str] | None = None,
    progress: bool = True,
    checkpoint_scope: str | None = None,
    tracking_wait_s: float = 300.0,
) -> dict[str, Any]:
    """:func:`run` on local folders.

    ``classes`` fixes the class order (the first is the negative class); by default it is the sorted
    label set with ``normal`` first when present. With ``checkpoint_scope`` (the pipeline passes its run
    id), checkpoints go to ``<train.checkpoint_dir>/<scope>/<mode>``
    (:func:`~isnetflow.training.checkpoint.scoped_location`), so two trainings sharing a checkpoint
    location never touch each other's files.

    Under torchrun (``isnetflow train --nproc N``) every rank calls this: each loads the data and trains its
    shard (:mod:`isnetflow.training.distributed`); rank 0 alone talks to MLflow and writes ``out``, and the
    other ranks return ``{"mode", "rank", "global_steps"}``.
    """
    if checkpoint_scope and cfg.checkpoint_dir:
        cfg = cfg.model_copy(
            update={"checkpoint_dir": scoped_location(cfg.checkpoint_dir, checkpoint_scope, cfg.mode)}
        )
    import mlflow
    import mlflow.pytorch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_train_data(validated, masks, cfg, classes=classes)
    counts = {s: data.splits.count(s) for s in ("train", "val", "test", "external")}
    rank = distributed_env()
    if not rank.is_main:
        # A torchrun worker: it trains its shard in step with rank 0; rank 0 alone tracks and writes outputs
        worker = train(cfg, data, resume=resume, progress=False)
        return {"mode": cfg.mode, "rank": rank.rank, "global_steps": worker.global_steps}
    log.info("training %s on %s%s", cfg.mode, counts, f" with {rank.world_size} processes" * rank.distributed)
    use_tracking(tracking_uri, experiment)
    run_tags = {
        "isnetflow.mode": cfg.mode,
        "isnetflow.version": __version__,
        "data.manifest_sha256": manifest_sha256(validated) or "",
        **(tags or {}),
    }
    # A resumed training continues its own MLflow run (the one its checkpoints name), instead of leaving
    # the killed run RUNNING forever and starting a second one.
    store = CheckpointStore(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    previous = _resumable_run(store) if resume and store is not None else None
    new_run = {"run_name": run_name or f"train-{cfg.mode}", "tags": run_tags}
    active = mlflow.start_run(**({"run_id": previous} if previous else new_run))
    try:
        summary = _tracked_training(
            cfg, data, validated, out, active, previous, store, counts, rank.world_size,
            resume=resume, progress=progress, tracking_wait_s=tracking_wait_s,
        )  # fmt: skip
    except BaseException:
        with contextlib.suppress(Exception):  # the server may be what failed
            mlflow.end_run(status="FAILED")
        raise
    try:
        mlflow.end_run()
    except TRACKING_ERRORS as exc:
        raise TrackingUnavailable(_unreachable(exc, cfg, out)) from exc
    return summary


#: what a distributed task copies from the TrainJob's MLflow run into its model artifact folder
_RUN_OUTPUTS = {
    TRAIN_SUMMARY_FILE: TRAIN_SUMMARY_FILE,
    "history.csv": "history.csv",
    SPLITS_FILE: SPLITS_FILE,
    "figures/heatmaps.png": "heatmaps.png",
    "figures/learning_curves.png": "learning_curves.png",
}


def run_trainjob(
    settings_json: str,
    mode: str,
    data_uri: str,
    masks_uri: str,
    out: str | Path,
    *,
    gpus: int,
    nodes: int = 1,
    image: str,
    pipeline_run: str,
    namespace: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    env: dict[str, str] | None = None,
    env_from_secrets: dict[str, tuple[str, str]] | None = None,
    pod_labels: dict[str, str] | None = None,
    service_account: str | None = None,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, str]] | None = None,
    api_client: Any = None,
    timeout_s: float = 7 * 24 * 3600.0,
    pod_out: str = "/tmp/isnetflow-train",
) -> dict[str, Any]:
    """Train ``mode`` on ``gpus`` GPUs over ``nodes`` nodes as a Kubeflow Trainer TrainJob; wait for it.

    The TrainJob (:mod:`isnetflow.cluster.launcher`) runs ``torchrun -m isnetflow.cli train`` with the
    same settings on ``nodes`` pods of ``gpus / nodes`` GPUs each; its ranks read ``data_uri`` and
    ``masks_uri`` from the object store, rank 0 tracks the run in MLflow with the tag
    ``isnetflow.trainjob=<job name>``. The job's name is a function of ``pipeline_run`` and ``mode``, so a
    retried task adopts its job instead of starting a second one; with ``train.checkpoint_dir`` the job
    resumes from its own checkpoints when the Trainer restarts it. When the job completes, the finished
    MLflow run it tagged is looked up and its summary, history and figures are copied to ``out``: the
    returned summary is the one the single-pod path returns, plus ``trainjob``. A failed job raises
    :class:`~isnetflow.cluster.trainjob.TrainJobFailed` with the job's reason and message. ``pod_out`` is
    the pods' scratch output folder (under ``/tmp``: the only writable place of their read-only root).
    """
    import mlflow

    from isnetflow.cluster.launcher import TRAINJOB_TAG, launch, training_job

    manifest = training_job(
        settings_json,
        mode,
        data_uri,
        masks_uri,
        gpus=gpus,
        nodes=nodes,
        image=image,
        pipeline_run=pipeline_run,
        experiment=experiment,
        pod_out=pod_out,
        namespace=namespace,
        tracking_uri=tracking_uri,
        env=env,
        env_from_secrets=env_from_secrets,
        pod_labels=pod_labels,
        service_account=service_account,
        node_selector=node_selector,
        tolerations=tolerations,
    )
    name = manifest["metadata"]["name"]
    launch(manifest, api_client=api_client, timeout_s=timeout_s)

    use_tracking(tracking_uri, experiment)
    runs = mlflow.search_runs(
        experiment_names=[experiment],
        filter_string=f"tags.`{TRAINJOB_TAG}` = '{name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    if not runs:
        raise RuntimeError(
            f"TrainJob {name} completed, but experiment {experiment!r} has no finished run tagged "
            f"{TRAINJOB_TAG}={name}: did rank 0 reach the same MLflow server?"
        )
    run_id = runs[0].info.run_id
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for src, dst in _RUN_OUTPUTS.items():
        got = Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=src, dst_path=str(out / ".dl"))
        )
        got.replace(out / dst)
    import shutil

    shutil.rmtree(out / ".dl", ignore_errors=True)
    summary = TrainSummary.read_from(out).model_copy(
        update={
            "local_model": None,  # the model stayed in MLflow: model_uri
            "trainjob": TrainJobInfo(name=name, namespace=manifest["metadata"]["namespace"], nodes=nodes,
                                     gpus_per_node=gpus // nodes),
        }
    )  # fmt: skip
    summary.write_to(out)
    return summary.as_json()
