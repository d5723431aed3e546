"""``isnetflow bench seeds``: judge a training recipe over several training seeds.

One cohort is prepared once (the synthetic demo cohort, or a user DICOM folder): validation and lung
masks through the production stages. Then, for every training seed (which sets the patient split, the
initialization and the batch order), each chosen *arm* (:data:`ARMS`) is trained with the production
training loop and evaluated with the production evaluation and the default promotion gates:

* ``isnet``: the ISNet recipe of the settings;
* ``standard``: the same network and schedule, cross-entropy only, raw images;
* ``masked``: the lungs-only reference (segment-then-classify, as in the ISNet paper): the standard model
  trained *and evaluated* on lung-masked inputs. It shows what the lungs allow; it cannot be deployed
  without a segmenter at inference, which is what the ISNet avoids;
* ``swap``: the ISNet's recipe without its relevance loss: the same warm-up inputs, the same
  background-swapped batches and the same selection, cross-entropy only (``train.relevance_loss: false``).
  The ISNet minus this arm is what the relevance loss adds over background swapping;
* ``authors``: the authors' recipe as this project implements it (:data:`AUTHORS_RECIPE`): raw warm-up,
  discarded (the ISNet restarts from the initial weights), raw ISNet batches, no gradient cap, C1/C2 from
  the warm-up, GWRP d 0.9. The reference for every deviation of the project's recipe.

Each seed reports, per arm, ``internal_auc`` (internal test split), ``external_auc`` (pooled external
sites), ``min_site_auc``, ``background_share`` (zennit audit), ``flip_rate`` (counterfactual background
swap) and ``gates_passed`` (every default gate, the ISNet's do-no-harm gate against the same seed's
standard model included; no champion), plus the per-epoch diagnostics as lists, and when the disease was
learned (:func:`isnetflow.artifacts.training.learning_milestones`): ``ce_below_half_epoch``, the first
epoch whose training cross-entropy is below 0.5, and for the arms with an ISNet phase ``learned_early``,
whether that epoch lies within the phase's first third (issue 25's yardstick; a flat cross-entropy means
the disease was not learned, whatever the heatmaps show). Everything is logged to MLflow as a parent run
with one nested run per (seed, arm), each with its learning curves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isnetflow.artifacts import finite
from isnetflow.artifacts.evaluation import EvaluationReport
from isnetflow.artifacts.training import learned_line
from isnetflow.config import Settings, TrainConfig
from isnetflow.names import BENCH_SEEDS_EXPERIMENT

log = logging.getLogger(__name__)

__all__ = [
    "ARMS",
    "AUTHORS_RECIPE",
    "MODELS",
    "Arm",
    "cohort_key",
    "parse_seeds",
    "prepare_cohort",
    "seed_study",
    "seed_table",
    "summarize",
]


@dataclass(frozen=True)
class Arm:
    """One model of a seed study: how its training settings derive from the recipe, and how it is judged."""

    name: str
    description: str
    train_update: Mapping[str, Any]
    """``TrainConfig`` fields set over the settings' (nested ``heatmap`` fields as a dict)."""
    masked_inputs: bool = False
    """Train and evaluate on lung-masked images (no audit, no gates: not a deployable model)."""

    def train_config(self, cfg: TrainConfig) -> TrainConfig:
        """``cfg`` with this arm's changes (validated, so an impossible combination fails here)."""
        data = cfg.model_dump()
        for key, value in self.train_update.items():
            if isinstance(value, Mapping):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return TrainConfig.model_validate(data)


AUTHORS_RECIPE: Mapping[str, Any] = {
    "mode": "isnet",
    "warmup_inputs": "raw",
    "warmup_restart": True,
    "isnet_swap_fraction": 0.0,
    "heatmap": {"grad_balance": None, "C1": None, "C2": None, "d": 0.9},
    "distill": {"teacher_epochs": 0},
}
"""The authors' recipe in this project's terms: each entry undoes one documented deviation
(docs/training.md)."""

ARMS: dict[str, Arm] = {
    arm.name: arm
    for arm in (
        Arm("isnet", "the ISNet recipe of the settings", {"mode": "isnet"}),
        Arm("standard", "the same network and schedule, cross-entropy only", {"mode": "standard"}),
        Arm("masked", "lungs-only reference: the standard model on lung-masked inputs",
            {"mode": "standard"}, masked_inputs=True),
        Arm("swap", "the ISNet's background swapping and selection, no relevance loss",
            {"mode": "isnet", "relevance_loss": False}),
        Arm("authors", "the authors' recipe (raw warm-up discarded, no cap, warm-up C1/C2, d 0.9)",
            AUTHORS_RECIPE),
    )
}  # fmt: skip
"""Every arm ``bench seeds --models`` can train, in table order."""

MODELS = ("isnet", "standard", "masked")
"""The default arms (``--models``)."""
METRICS = ("internal_auc", "external_auc", "min_site_auc", "background_share", "flip_rate")
HISTORY_KEYS = (
    "train_ce",
    "train_background",
    "train_foreground",
    "train_grad_norm_ce",
    "train_grad_norm_heatmap",
    "train_grad_cosine",
    "train_share_below_c1",
    "train_share_above_c2",
    "val_auc",
    "val_background_share",
    "val_swap_change",
)


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"0,3,7"`` and ``"1-2,5"`` work too."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"--seeds {text!r}: expected e.g. 0-4 or 0,2,5") from None
        if b < a or a < 0:
            raise ValueError(f"--seeds {text!r}: bad range {part!r}")
        seeds.extend(range(a, b + 1))
    if not seeds:
        raise ValueError(f"--seeds {text!r}: no seeds")
    return sorted(set(seeds))


def cohort_key(
    settings: Settings, input_uri: str = "", labels_uri: str = "", external_sites: Sequence[str] = ()
) -> str:
    """The key of everything that shapes a prepared cohort: synthetic cohort, validation and mask settings,
    the segmenter (the shipped or a local one by its weights' sha256, so new weights never reuse old
    masks; a registry URI by itself) and the input."""
    import hashlib

    from isnetflow.masks.network import resolve_spec_path
    from isnetflow.masks.spec import SegmenterSpec

    model = settings.masks.model
    local = model is None or Path(model).exists()
    segmenter = SegmenterSpec.load(resolve_spec_path(model)).weights_sha256 if local else model
    return hashlib.sha256(
        json.dumps(
            [settings.synth.model_dump(mode="json", exclude={"workers"}),
             settings.validate.model_dump(mode="json"),
             settings.masks.model_dump(mode="json"), segmenter, input_uri, labels_uri, list(external_sites)],
            sort_keys=True,
        ).encode()
    ).hexdigest()  # fmt: skip


def prepare_cohort(
    settings: Settings,
    workdir: Path,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: Sequence[str] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Validate the cohort and make its lung masks once (production stages); return paths and sites.

    The result is kept in ``workdir`` under :func:`cohort_key`: a later study with the same key reuses it.
    """
    from isnetflow.artifacts.validation import IngestSummary
    from isnetflow.stages import ingest, masks
    from isnetflow.tasks import MASKS_SUBDIR, DataArtifact

    key = cohort_key(settings, input_uri, labels_uri, external_sites)
    marker = workdir / "cohort.json"
    if marker.is_file():
        kept = json.loads(marker.read_text())
        if kept.get("key") == key:
            log.info("reusing the prepared cohort in %s", workdir)
            return {"validated": Path(kept["validated"]), "masks": Path(kept["masks"]),
                    "external_sites": kept["external_sites"]}  # fmt: skip
    info = ingest.run(
        settings, workdir / "data", input_uri=input_uri, labels_uri=labels_uri,
        external_sites=list(external_sites), progress=progress,
    )  # fmt: skip
    if not info["passed"]:
        raise RuntimeError(f"validation failed: {info['reason']}")
    data = DataArtifact(workdir / "data", IngestSummary.of(info))
    validated = data.validated
    masks.run(settings.masks, validated, workdir / "masks", data.provided_masks, progress=progress)
    cohort = {
        "validated": validated,
        "masks": workdir / "masks" / MASKS_SUBDIR,
        "external_sites": list(info["external_sites"]),
    }
    marker.write_text(
        json.dumps({"key": key, **{k: str(v) if isinstance(v, Path) else v for k, v in cohort.items()}})
    )
    return cohort


def _metrics(payload: dict[str, Any]) -> dict[str, Any]:
    ev = EvaluationReport.of(payload)
    sites = [v for v in ev.external_site_aucs().values() if v is not None]
    return {
        "internal_auc": finite(ev.internal_test.auc),
        "external_auc": finite(ev.external_pooled.auc),
        "min_site_auc": min(sites) if sites else None,
        "background_share": ev.background_share,
        "flip_rate": ev.flip_rate,
    }


def _one(
    arm: Arm,
    cfg: TrainConfig,
    data: Any,
    settings: Settings,
    sites: Sequence[str],
    out: Path,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, float]], Path]:
    """Train and evaluate one (seed, arm); return its metrics, its evaluation payload, its history and its
    learning-curve PNG. Pure computation (no tracking), so that it can run in a worker process.
    """
    from isnetflow.evaluation.core import evaluate_model
    from isnetflow.training.loop import train
    from isnetflow.viz.curves import learning_curves

    if arm.masked_inputs:
        data = dataclasses.replace(data, images=data.images * data.masks)
    tcfg = arm.train_config(cfg)
    t0 = time.perf_counter()
    result = train(tcfg, data, progress=progress)
    train_s = time.perf_counter() - t0
    ev = evaluate_model(result.model, data, settings.evaluate, sites=sites, audit=not arm.masked_inputs)
    m = _metrics(ev.payload)
    m["best_epoch"] = result.best_epoch
    m["train_seconds"] = round(train_s, 1)
    if arm.masked_inputs:
        m = {k: m[k] for k in ("internal_auc", "external_auc", "min_site_auc", "best_epoch", "train_seconds")}
    m.update(result.milestones())
    # every arm's curves, the lungs-only reference's too: how fast it learns is the yardstick of the others
    m["history"] = {k: [h.get(k) for h in result.history] for k in HISTORY_KEYS}
    m["history"]["heatmap_loss_on"] = [bool(h.get("heatmap_loss_on")) for h in result.history]
    out.mkdir(parents=True, exist_ok=True)
    png = learning_curves(
        result.history, out / f"{arm.name}-curves.png", title=f"{arm.name}, seed {cfg.seed}"
    )
    return m, ev.payload, result.history, png


def _gates(
    kind: str, payloads: Mapping[str, dict[str, Any]], settings: Settings
) -> tuple[bool, list[str]] | None:
    """The default gates of one deployable arm (no champion). Every arm but ``standard`` is judged against
    the same seed's standard model (the do-no-harm gate) when the study trained one."""
    from isnetflow.evaluation.gates import BaselineReference, evaluate_gates

    if ARMS[kind].masked_inputs:
        return None
    baseline = None
    if kind != "standard" and "standard" in payloads:
        baseline = BaselineReference.from_payload(payloads["standard"], name="standard")
    gates = evaluate_gates(payloads[kind], settings.promote, None, baseline=baseline)
    return all(g.passed for g in gates), [g.name for g in gates if not g.passed]


def _seed_row(
    settings: Settings,
    seed: int,
    cohort: dict[str, Any],
    models: Sequence[str],
    workdir: Path,
    progress: bool,
    num_threads: int | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[list[dict[str, float]], Path]]]:
    """Every arm of one seed: the row of the result and, per arm, its history and curve PNG."""
    from isnetflow.training.inputs import load_train_data

    update: dict[str, Any] = {"seed": seed}
    if num_threads is not None:  # a worker process of --jobs N: its share of the cores, for every step
        import torch

        torch.set_num_threads(num_threads)
        update["num_threads"] = num_threads
    cfg = settings.train.model_copy(update=update)
    data = load_train_data(
        Path(cohort["validated"]), Path(cohort["masks"]), cfg, classes=list(settings.validate.classes)
    )
    row: dict[str, Any] = {"seed": seed}
    extras: dict[str, tuple[list[dict[str, float]], Path]] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for kind in models:
        out = workdir / f"seed{seed}"
        m, payloads[kind], history, png = _one(
            ARMS[kind], cfg, data, settings, cohort["external_sites"], out, progress
        )
        row[kind] = m
        extras[kind] = (history, png)
    for kind in models:
        judged = _gates(kind, payloads, settings)
        if judged is not None:
            row[kind]["gates_passed"], row[kind]["gates_failed"] = judged
    return row, extras


def _log_seed(row: dict[str, Any], extras: dict[str, Any], parent_id: str) -> None:
    """Nested MLflow runs of one seed (one per model): per-epoch metrics, results, learning curves."""
    import mlflow

    seed = row["seed"]
    for kind, (history, png) in extras.items():
        with mlflow.start_run(run_name=f"seed{seed}-{kind}", nested=True):
            mlflow.set_tags({"bench.seed": str(seed), "bench.model": kind, "bench.parent": parent_id})
            for e, h in enumerate(history):
                mlflow.log_metrics(
                    {k: float(v) for k, v in h.items() if k != "epoch" and math.isfinite(v)}, step=e
                )
            m = row[kind]
            mlflow.log_metrics(
                {k: float(v) for k, v in m.items() if isinstance(v, (int, float)) and v is not None}
            )
            mlflow.log_artifact(str(png), artifact_path="figures")


def seed_study(
    settings: Settings,
    seeds: Sequence[int],
    workdir: str | Path,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: Sequence[str] = (),
    tracking_uri: str | None = None,
    experiment: str = BENCH_SEEDS_EXPERIMENT,
    models: Sequence[str] = MODELS,
    cohort_dir: str | Path | None = None,
    progress: bool = True,
    on_seed: Callable[[dict[str, Any]], None] | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train and evaluate ``models`` for every seed in ``seeds``; see the module docstring.

    ``jobs > 1`` trains that many seeds at once in worker processes, each with an equal share of the CPU
    threads (``train.num_threads``, else every core); the parent alone logs to MLflow. Results are the
    same as with ``jobs=1`` and the same thread count per training.
    """
    import mlflow

    from isnetflow.registry.lineage import code_version
    from isnetflow.registry.tracking import flatten, use_tracking

    unknown = sorted(set(models) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(ARMS)}")
    models = [name for name in ARMS if name in models]  # table order; standard before the do-no-harm gate
    t0 = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cohort = prepare_cohort(
        settings, Path(cohort_dir) if cohort_dir is not None else workdir / "cohort",
        input_uri=input_uri, labels_uri=labels_uri,
        external_sites=external_sites, progress=progress,
    )  # fmt: skip
    use_tracking(tracking_uri, experiment)
    rows: list[dict[str, Any]] = []
    with mlflow.start_run(run_name="bench-seeds") as parent:
        mlflow.log_params(flatten(settings.train.model_dump(mode="json"), "train."))
        mlflow.log_params({"seeds": ",".join(map(str, seeds)), "synth.seed": settings.synth.seed,
                           "synth.difficulty": settings.synth.difficulty,
                           "input": input_uri or "synthetic"})  # fmt: skip
        if jobs <= 1:
            for seed in seeds:
                row, extras = _seed_row(settings, seed, cohort, models, workdir, progress)
                _log_seed(row, extras, parent.info.run_id)
                rows.append(row)
                if on_seed is not None:
                    on_seed(row)
        else:
            import multiprocessing
            import os
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, (settings.train.num_threads or os.cpu_count() or 1) // jobs)
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(jobs, len(seeds)), mp_context=ctx) as pool:
                futures = [
                    pool.submit(_seed_row, settings, seed, cohort, models, workdir, False, threads)
                    for seed in seeds
                ]
                for future in as_completed(futures):
                    row, extras = future.result()
                    _log_seed(row, extras, parent.info.run_id)
                    rows.append(row)
                    if on_seed is not None:
                        on_seed(row)
            rows.sort(key=lambda r: int(r["seed"]))
        result = {
            "seeds": rows,
            "summary": summarize(rows, models),
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "cohort": {"input": input_uri or "synthetic", "synth_seed": settings.synth.seed,
                       "difficulty": settings.synth.difficulty, "external_sites": cohort["external_sites"]},
            "machine": {"platform": platform.platform(),
                        "processor": platform.processor() or platform.machine()},
            "code_version": code_version(),
            "train_settings": settings.train.model_dump(mode="json"),
            "mlflow_run_id": parent.info.run_id,
        }  # fmt: skip
        for kind, stats in result["summary"].items():
            for metric, agg in stats.items():
                for name, v in agg.items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        mlflow.log_metric(f"{kind}.{metric}.{name}", float(v))
        (workdir / "bench_seeds.json").write_text(json.dumps(result, indent=2))
        mlflow.log_artifact(str(workdir / "bench_seeds.json"))
    return result


def summarize(rows: Sequence[dict[str, Any]], models: Sequence[str] = MODELS) -> dict[str, Any]:
    """Mean, min and max of every metric per model over the seeds; ``gates_passed`` and ``learned_early``:
    count and of how many; ``ce_below_half_epoch``: mean, min and max over the runs that got there, and
    ``never``, how many did not."""
    out: dict[str, Any] = {}
    for kind in models:
        stats: dict[str, Any] = {}
        for metric in (*METRICS, "ce_below_half_epoch", "gates_passed", "learned_early"):
            given = [r[kind][metric] for r in rows if kind in r and metric in r[kind]]
            values = [v for v in given if v is not None]
            agg: dict[str, Any] = {}
            if metric in ("gates_passed", "learned_early"):
                if values:
                    agg = {"count": int(sum(bool(v) for v in values)), "of": len(values)}
            elif values:
                arr = np.asarray(values, dtype=float)
                agg = {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}
            if metric == "ce_below_half_epoch" and len(given) > len(values):
                agg["never"] = len(given) - len(values)
            if agg:
                stats[metric] = agg
        out[kind] = stats
    return out


def seed_table(result: dict[str, Any]) -> Any:
    """A rich table: one row per seed and model, then mean / min / max per model."""
    from rich.table import Table

    def fmt(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, bool):
            return "pass" if v else "refused"
        return f"{float(v):.3f}"

    def learned(m: Mapping[str, Any]) -> str:
        if "ce_below_half_epoch" not in m:  # a result written before the milestones existed
            return "n/a"
        return learned_line(m["ce_below_half_epoch"], m.get("learned_early"))

    table = Table(title="bench seeds: ISNet and its comparison arms", title_justify="left")
    columns = ("seed", "model", "internal AUC", "external AUC", "min site AUC", "bg share", "flip",
               "CE < 0.5", "gates")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("seed", "model", "gates") else "right")
    for row in result["seeds"]:
        for kind in ARMS:
            if kind in row:
                m = row[kind]
                gates = fmt(m.get("gates_passed")) if "gates_passed" in m else "-"
                if m.get("gates_failed"):
                    gates += f" ({', '.join(m['gates_failed'])})"
                table.add_row(str(row["seed"]), kind, *(fmt(m.get(k)) for k in METRICS), learned(m), gates)
    for kind, stats in result["summary"].items():
        for agg in ("mean", "min", "max"):
            cells = [fmt(stats[k][agg]) if k in stats else "n/a" for k in METRICS]
            passed = stats.get("gates_passed")
            gates = f"{passed['count']}/{passed['of']} passed" if passed and agg == "mean" else ""
            early = stats.get("learned_early")
            ce = f"{early['count']}/{early['of']} early" if early and agg == "mean" else ""
            table.add_row(agg, kind, *cells, ce, gates, style="bold" if agg == "mean" else None)
    return table
