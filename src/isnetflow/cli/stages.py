"""The stage commands: synth, validate, train, train-segmenter, segment, run, evaluate, promote, explain."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from isnetflow.cli.common import (
    ConfigOpt,
    EvaluateTrackingUriOpt,
    ExplainTrackingUriOpt,
    InputOpt,
    LabelsOpt,
    MlflowExperimentOpt,
    RunExternalOpt,
    SegmenterTrackingUriOpt,
    SegmentTrackingUriOpt,
    ThreadsOpt,
    TrackingUriOpt,
    TrainTrackingUriOpt,
    WorkdirTrackingUriOpt,
    WorkersOpt,
    console,
    load_settings,
    with_overrides,
)
from isnetflow.config import Settings
from isnetflow.names import EXPERIMENT


def synth(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Output folder (required unless only --preview or --shortcut-gallery)."
        ),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of images.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (output is deterministic).")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Nominal image height in pixels.")] = None,
    difficulty: Annotated[
        float | None, typer.Option("--difficulty", help="0 = obvious lesions, 1 = faint.")
    ] = None,
    strength: Annotated[
        float | None, typer.Option("--shortcut-strength", help="P(cue|positive) at internal sites.")
    ] = None,
    shortcut: Annotated[
        str | None,
        typer.Option(
            "--shortcut",
            metavar="KIND",
            help="The planted cue: tag (default), marker, text, border, device, laterality, band, exposure.",
        ),
    ] = None,
    placement: Annotated[
        str | None,
        typer.Option(
            "--shortcut-placement",
            metavar="far|near",
            help="far: image corners and edges (default); near: just outside the lungs.",
        ),
    ] = None,
    workers: WorkersOpt = None,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Also write a PNG grid of examples per site and class.")
    ] = None,
    gallery: Annotated[
        Path | None,
        typer.Option(
            "--shortcut-gallery",
            help="Also write a PNG grid of one positive image per shortcut kind and placement.",
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a synthetic multi-hospital chest X-ray DICOM cohort with a planted background shortcut."""
    from isnetflow.stages import synth as stage

    cfg = with_overrides(
        load_settings(config).synth, n=n, seed=seed, size=size, difficulty=difficulty, workers=workers
    )
    if strength is not None or shortcut is not None or placement is not None:
        update = with_overrides(cfg.shortcut, strength=strength, kind=shortcut, placement=placement)
        cfg = cfg.model_copy(update={"shortcut": update})
    if out is None and preview is None and gallery is None:
        raise typer.BadParameter("give --out DIR (and optionally --preview PNG)")
    if gallery is not None:
        from isnetflow.synth import write_shortcut_gallery

        console.print(
            f"shortcut gallery: {write_shortcut_gallery(gallery, size=size or 192, seed=cfg.seed, base=cfg)}"
        )
        if out is None and preview is None:
            return
    with tempfile.TemporaryDirectory() as tmp:
        target = out or Path(tmp)
        if out is None and n is None:
            cfg = cfg.model_copy(update={"n": 120})
        summary = stage.run(cfg, target, preview=preview)
        dt = summary["wall_seconds"]
        console.print(
            f"[green]wrote {summary['n']} images[/] from {len(summary['sites'])} sites to {target} "
            f"in {dt:.1f} s ({summary['n'] / dt:.0f} images/s)"
        )
        for s in summary["sites"]:
            console.print(
                f"  {s['code']:<6} {s['role']:<8} n={s['n_images']:<5} "
                f"{s['photometric']} {s['bits_stored']:>2}b  cue-label phi={s['cue_label_phi']:+.2f}"
            )
        if preview is not None:
            console.print(f"preview: {preview}")


def validate(
    source: Annotated[
        str, typer.Option("--input", "-i", help="DICOM folder (searched recursively) or s3://bucket/prefix.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output: manifest.csv, images/, validation.json/.html.")
    ],
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels", help="labels.csv: path,label[,patient_id][,site][,mask][,role] (local or s3://)."
        ),
    ] = None,
    min_pass_rate: Annotated[
        float | None, typer.Option("--min-pass-rate", help="Fail below this share of valid files.")
    ] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Normalized image side.")] = None,
    workers: WorkersOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Check every file (valid | quarantined | ignored, + reason), normalize the valid ones, run the GX suite.

    Every file found under the input is in manifest.csv. Files that are not input images are ignored,
    each with its rule: validate.exclude matches, the labels file, the masks/ folder beside the labels
    file (provided lung masks), the output folder, DICOMDIR and non-DICOM files not named *.dcm.

    A site whose valid images hold (nearly) one class is a warning naming the site/label confound
    (validate.confound: fail makes it a failure).

    Exit status 0 when the pass rate reaches the threshold and the expectation suite passes, 1 (with a
    one-line reason) otherwise, 2 when the input or the labels file cannot be used at all.
    """
    import sys

    from isnetflow.stages import validate as stage

    cfg = with_overrides(
        load_settings(config).validate, min_pass_rate=min_pass_rate, image_size=image_size, workers=workers
    )
    try:
        result = stage.run(cfg, source, out, labels=labels, progress=sys.stderr.isatty())
    except stage.ValidateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    s = result.summary
    counts = s["counts"]
    rules = ", ".join(f"{code} {n}" for code, n in s["ignored_reasons"].items())
    console.print(
        f"{counts['valid']} valid, {counts['quarantined']} quarantined, {counts['ignored']} ignored"
        f"{f' ({rules})' if rules else ''} of {s['files']} files "
        f"(pass rate {s['pass_rate']:.3f} over {counts['valid'] + counts['quarantined']} DICOM files), "
        f"expectations {'passed' if s['expectations']['success'] else 'FAILED'} -> {out}",
        soft_wrap=True,
    )
    confound = (s.get("class_balance") or {}).get("line")
    if confound and cfg.confound == "warn":  # with 'fail' the failure line below names it
        console.print(f"warning: {confound}", style="yellow", markup=False, soft_wrap=True)
    if not result.passed:
        typer.echo(f"validation failed: {result.failure}", err=True)
        raise typer.Exit(1)


def train(
    data: Annotated[
        str, typer.Option("--data", help="Output folder of `isnetflow validate` (local or s3://).")
    ],
    mode: Annotated[
        str | None, typer.Option("--mode", help="isnet or standard (default from config).")
    ] = None,
    masks: Annotated[
        str | None,
        typer.Option(
            "--masks", help="Folder of <SOPInstanceUID>.png lung masks (default: manifest mask column)."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for model + figures.")] = Path(
        "train-out"
    ),
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    checkpoint_dir: Annotated[
        str | None, typer.Option("--checkpoint-dir", help="Local path or s3://bucket/prefix for checkpoints.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint.")] = False,
    tracking_uri: TrainTrackingUriOpt = None,
    experiment: MlflowExperimentOpt = EXPERIMENT,
    config: ConfigOpt = None,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Data-parallel processes on this machine: above 1, reruns this command under torchrun "
            "(gloo on CPU, nccl with one GPU per process). train.batch_size is per process.",
        ),
    ] = 1,
    settings_json: Annotated[
        str | None,
        typer.Option("--settings-json", help="Settings as JSON (instead of --config; pipelines pass it)."),
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="KEY=VALUE tag on the MLflow run (repeatable).")
    ] = None,
    checkpoint_scope: Annotated[
        str | None,
        typer.Option(
            "--checkpoint-scope",
            help="Checkpoints under <checkpoint dir>/<scope>/<mode> (a pipeline passes its run id).",
        ),
    ] = None,
) -> None:
    """Train an ISNet (LRP background-relevance loss) or the standard baseline; log to MLflow.

    --data and --masks may be local folders or s3:// prefixes (copied for the training)."""
    from isnetflow.dicom.source import SourceError
    from isnetflow.registry.tracking import resolve_tracking_uri
    from isnetflow.stages import train as stage
    from isnetflow.stages.train import TrackingUnavailable
    from isnetflow.training import TrainDataError
    from isnetflow.training.checkpoint import CheckpointError
    from isnetflow.training.distributed import distributed_env

    if nproc > 1 and not distributed_env().distributed:
        args = ["--data", str(data), "--out", str(out), "--experiment", experiment]
        for flag, value in (("--mode", mode), ("--masks", masks), ("--epochs", epochs),
                            ("--checkpoint-dir", checkpoint_dir), ("--tracking-uri", tracking_uri),
                            ("--config", config), ("--settings-json", settings_json),
                            ("--checkpoint-scope", checkpoint_scope)):  # fmt: skip
            if value is not None:
                args += [flag, str(value)]
        for t in tag or []:
            args += ["--tag", t]
        raise typer.Exit(_torchrun(nproc, ["train", *args, *(["--resume"] if resume else [])]))

    if settings_json is not None and config is not None:
        raise typer.BadParameter("give --config or --settings-json, not both")
    try:
        settings = Settings.model_validate_json(settings_json) if settings_json else load_settings(config)
    except ValueError as exc:
        raise typer.BadParameter(f"--settings-json: {exc}") from exc
    tags: dict[str, str] = {}
    for t in tag or []:
        key, sep, value = t.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--tag {t!r}: expected KEY=VALUE")
        tags[key] = value
    cfg = with_overrides(settings.train, mode=mode, epochs=epochs, checkpoint_dir=checkpoint_dir)
    try:
        summary = stage.run(
            cfg,
            data,
            masks,
            out,
            tracking_uri=resolve_tracking_uri(tracking_uri),
            experiment=experiment,
            resume=resume,
            classes=list(settings.validate.classes),
            tags=tags,
            checkpoint_scope=checkpoint_scope,
        )
    except (
        TrainDataError,
        SourceError,
        FileNotFoundError,
        ValueError,
        CheckpointError,
        TrackingUnavailable,
    ) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if distributed_env().is_main:
        typer.echo(json.dumps(summary, indent=2))


def _torchrun(nproc: int, argv: list[str]) -> int:
    """Run ``isnetflow <argv>`` under torchrun with ``nproc`` processes on this machine; its exit code.

    torchrun (``torch.distributed.run``) is the launcher: it sets each rank's environment, watches the
    workers and ends them all when one fails. ``--standalone`` gives the one-node rendezvous.
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "isnetflow.cli", *argv]  # fmt: skip
    console.print(f"[dim]launching {nproc} processes: torchrun --standalone --nproc-per-node={nproc} "
                  f"-m isnetflow.cli {' '.join(argv)}[/]")  # fmt: skip
    return subprocess.call(cmd)


def train_segmenter(
    images: Annotated[Path, typer.Option("--images", help="Folder of PNG/JPEG/DICOM radiographs.")],
    masks: Annotated[
        Path, typer.Option("--masks", help="Folder of <stem>.png masks: 255 lung, 0 background, 127 ignore.")
    ],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV with patient_id and image columns (patient-grouped split)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (weights, card, figures).")] = Path(
        "segmenter-out"
    ),
    val_fraction: Annotated[
        float | None, typer.Option("--val-fraction", help="Share of patients held out; 0 = train on all.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Maximum epochs.")] = None,
    synthetic_n: Annotated[
        int | None, typer.Option("--synthetic-n", help="Synthetic phantoms added to training (0 = none).")
    ] = None,
    architecture: Annotated[
        str | None, typer.Option("--architecture", help="unet | segresnet | basicunet | attentionunet.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    threads: ThreadsOpt = None,
    tracking_uri: SegmenterTrackingUriOpt = None,
    register: Annotated[
        str | None, typer.Option("--register", help="Also register the model under this name.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Train the MONAI lung segmenter on image/mask pairs (+ synthetic phantoms); log to MLflow."""
    import shlex
    import sys

    from isnetflow.registry.tracking import resolve_tracking_uri
    from isnetflow.stages import segmenter as stage

    cfg = with_overrides(
        load_settings(config).segmenter,
        val_fraction=val_fraction,
        epochs=epochs,
        synthetic_n=synthetic_n,
        architecture=architecture,
        seed=seed,
        threads=threads,
        tracking_uri=tracking_uri,
        registered_model=register,
    )
    command = shlex.join(["isnetflow", *sys.argv[1:]])
    try:
        # this command's default store is under --out, not the shared local one
        store = resolve_tracking_uri(cfg.tracking_uri, out)
        summary = stage.train(
            cfg, images, masks, out, manifest=manifest, command=command, progress=True, tracking_uri=store
        )
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(summary, indent=2))


def segment(
    inputs: Annotated[
        list[Path],
        typer.Option("--input", "-i", help="DICOM/PNG/JPEG file or folder (recursive); repeatable."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: <stem>.png masks, segment.csv.")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="Spec JSON / .pt / folder, or MLflow URI (default: shipped weights)."),
    ] = None,
    overlays: Annotated[
        bool, typer.Option("--overlays", help="Also write overlay previews to OUT/overlays/.")
    ] = False,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    threads: ThreadsOpt = None,
    tracking_uri: SegmentTrackingUriOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Lung masks (255 lung, 0 background) at each input's original resolution, with QC per image."""
    import sys

    from isnetflow.registry.tracking import resolve_tracking_uri
    from isnetflow.stages.masks import segment_files

    cfg = with_overrides(
        load_settings(config).masks,
        model=model,
        batch_size=batch_size,
        threads=threads,
        overlays=overlays or None,
    )
    try:
        # a store is needed only for an MLflow --model, and there is no local default
        store = resolve_tracking_uri(tracking_uri, None)
        summary = segment_files(inputs, out, cfg, tracking_uri=store, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(
        f"{summary['n_segmented']} of {summary['n_inputs']} images segmented "
        f"({summary['n_qc_failed']} failed QC, {summary['n_unreadable']} unreadable) -> {out} "
        f"in {summary['seconds']:.1f} s",
        soft_wrap=True,
    )
    typer.echo(json.dumps(summary, indent=2))
    if summary["n_segmented"] == 0:
        raise typer.Exit(2)


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr; the caller raises the returned Exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class _StageProgress:
    """One line per finished pipeline task; on a terminal, a live line with the running task's time."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: Any = None
        self.t0 = 0.0

    def __call__(self, label: str, seconds: float | None, ok: bool) -> None:
        import time

        from rich.text import Text

        if seconds is None:
            self.t0 = time.perf_counter()
            if self.console.is_terminal:
                t0 = self.t0

                class _Elapsed:
                    def __rich__(self) -> Text:
                        return Text(f"{label} ... {time.perf_counter() - t0:.0f} s")

                self.status = self.console.status(_Elapsed())
                self.status.start()
            return
        if self.status is not None:
            self.status.stop()
            self.status = None
        if ok:  # a failed try may be retried; a final failure is reported once, by the caller
            self.console.print(f"{label:<18} [green]done[/green] {seconds:7.1f} s", highlight=False)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def run(
    ctx: typer.Context,
    input_uri: InputOpt = None,
    labels: LabelsOpt = None,
    external_sites: RunExternalOpt = None,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where runs, artifacts and the local MLflow store live.")
    ] = Path(".isnetflow"),
    summary: Annotated[Path | None, typer.Option("--summary", help="Write the summary JSON here.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Synthetic cohort size (default: config).")] = None,
    tracking_uri: WorkdirTrackingUriOpt = None,
    skip_if_unchanged: Annotated[
        bool,
        typer.Option(
            "--skip-if-unchanged",
            help="Stop before training when data and recipe match the champion or a refusal (as scheduled).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary JSON instead of the table.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show kfp's logs on the terminal (always in the run's pipeline.log)."
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the whole pipeline locally with kfp.local on the embedded defaults (the `make demo` job).

    A preflight checks the input, labels.csv, the site names and the settings first; a problem is one
    line and exit status 2. Then one line per pipeline task, and the table comparing both models.
    """
    import importlib
    import sys

    from isnetflow.registry.tracking import resolve_tracking_uri
    from isnetflow.reporting import run_summary_renderable
    from isnetflow.stages import preflight

    verbose = verbose or bool((ctx.obj or {}).get("verbose"))
    try:
        settings = Settings.load(config)
        if n is not None:
            settings = settings.model_copy(update={"synth": with_overrides(settings.synth, n=n)})
        checked = preflight.run(
            settings, input_uri=input_uri or "", labels_uri=labels or "", external_sites=external_sites or []
        )
    except (preflight.PreflightError, ValueError, typer.BadParameter) as exc:
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise _fail(first) from None
    local_runner = importlib.import_module("isnetflow_kfp.pipelines.local")  # the kfp layer, loaded lazily
    err = Console(file=sys.stderr, soft_wrap=True)  # this stderr: the run redirects sys.stderr to its log
    progress = _StageProgress(err)
    try:
        result = local_runner.run_local(
            settings,
            workdir,
            input_uri=input_uri or "",
            labels_uri=labels or "",
            external_sites=checked.external_sites,
            tracking_uri=resolve_tracking_uri(tracking_uri, workdir),
            skip_if_unchanged=skip_if_unchanged,
            verbose=verbose,
            progress=progress,
        )
    except local_runner.PipelineFailed as exc:
        progress.close()
        typer.echo(f"error: task {exc.task} failed: {exc.error}", err=True)
        typer.echo(f"full log: {exc.log}", err=True)
        raise typer.Exit(1) from None
    finally:
        progress.close()
    text = json.dumps(result, indent=2)
    if summary is not None:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(text)
    if as_json:
        typer.echo(text)
        return
    venv_mlflow = Path(sys.executable).parent / "mlflow"
    mlflow_bin = str(venv_mlflow) if venv_mlflow.is_file() else "mlflow"
    Console(soft_wrap=True).print(run_summary_renderable(result, mlflow=mlflow_bin))
    typer.echo(f"full log: {result['log']}")
    if summary is not None:
        typer.echo(f"summary JSON: {summary}")


def evaluate(
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="Local model.pt (or its folder), runs:/... or models:/... URI."),
    ],
    data: Annotated[Path, typer.Option("--data", help="Output folder of `isnetflow validate`.")],
    masks: Annotated[
        Path | None,
        typer.Option("--masks", help="Folder of <SOPInstanceUID>.png lung masks (default: manifest column)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output: evaluation.json, report.html, figures/.")
    ] = Path("evaluate-out"),
    sites: Annotated[
        list[str] | None, typer.Option("--sites", help="Only these sites (repeatable; default: all).")
    ] = None,
    n_boot: Annotated[int | None, typer.Option("--n-boot", help="Bootstrap replicates for AUC CIs.")] = None,
    no_audit: Annotated[
        bool, typer.Option("--no-audit", help="Skip the zennit audit and the counterfactual test.")
    ] = False,
    recompute_split: Annotated[
        bool,
        typer.Option(
            "--recompute-split",
            help="Evaluate a model trained before splits.csv existed on a split recomputed from its seed and "
            "fractions (evaluate.recompute_split; the report says so).",
        ),
    ] = False,
    tracking_uri: EvaluateTrackingUriOpt = None,
    experiment: MlflowExperimentOpt = EXPERIMENT,
    config: ConfigOpt = None,
) -> None:
    """Metrics on the internal test split and each external site, shortcut audit, report (+ MLflow)."""
    import sys

    from isnetflow.registry.tracking import DEFAULT_HOME, is_mlflow_uri, resolve_tracking_uri
    from isnetflow.stages import evaluate as stage

    # tracked when a store is named (the option, $MLFLOW_TRACKING_URI); the local store: MLflow models only
    store = resolve_tracking_uri(tracking_uri, DEFAULT_HOME if is_mlflow_uri(model) else None)
    settings = load_settings(config)
    cfg = with_overrides(settings.evaluate, n_boot=n_boot, recompute_split=recompute_split or None)
    try:
        payload = stage.run(
            cfg,
            model,
            data,
            masks,
            out,
            sites=sites or [],
            tracking_uri=store,
            experiment=experiment,
            train_fallback=settings.train,
            audit=not no_audit,
            progress=sys.stderr.isatty(),
        )
    except stage.EvaluateStageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    splits, audit = payload["splits"], payload.get("audit", {})
    if payload["data"].get("split_recomputed"):
        typer.echo(
            "warning: the internal split was recomputed (the model has no stored splits.csv)", err=True
        )

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    console.print(
        f"internal test AUC {fmt(splits['internal_test']['auc'])}, external pooled AUC "
        f"{fmt(splits['external_pooled']['auc'])} "
        f"(95% CI low {fmt(splits['external_pooled']['auc_ci_low'])}), "
        f"background share {fmt(audit.get('background_share', {}).get('pooled'))}, counterfactual flip rate "
        f"{fmt(audit.get('counterfactual', {}).get('flip_rate'))} -> {out / 'evaluation.json'}",
        soft_wrap=True,
    )


def promote(
    candidate: Annotated[
        str | None,
        typer.Option(
            "--candidate", help="Model to promote: runs:/..., models:/<name>/<version> or model.pt."
        ),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="YAML with PromotionPolicy keys (top level or under promote:)."),
    ] = None,
    evaluation: Annotated[
        Path | None,
        typer.Option("--evaluation", help="evaluation.json (or its folder); default: latest evaluate run."),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline-evaluation",
            help="evaluation.json (or its folder) of the standard model trained beside the candidate: the "
            "do-no-harm gate compares with it (without it that gate is not applicable).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Compute the gates; change nothing.")] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Make previous-champion the champion again.")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Validated data for the champion (default: the evaluation's)."),
    ] = None,
    masks: Annotated[
        Path | None, typer.Option("--masks", help="Lung masks for the champion evaluation.")
    ] = None,
    mask_model_version: Annotated[
        str, typer.Option("--mask-model-version", help="Lung-mask model version, recorded as lineage.")
    ] = "",
    name: Annotated[
        str | None, typer.Option("--name", help="Registered model name (default: policy).")
    ] = None,
    tracking_uri: TrackingUriOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Register a candidate, gate it, move `champion` only if every gate passes (or --rollback).

    Exit status 0 when promoted (dry run: would be promoted; rollback: done), 1 when a gate failed,
    2 when the inputs cannot be used.
    """
    from isnetflow.config import PromotionPolicy
    from isnetflow.registry.tracking import resolve_tracking_uri
    from isnetflow.stages import promote as stage

    settings = load_settings(config)
    try:
        policy = (
            PromotionPolicy.from_yaml(policy_file, section="promote") if policy_file else settings.promote
        )
        if name:
            policy = policy.model_copy(update={"registered_model": name})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        if rollback:
            store = resolve_tracking_uri(tracking_uri)
            typer.echo(json.dumps(stage.rollback(policy, tracking_uri=store), indent=2))
            return
        if candidate is None:
            raise typer.BadParameter("give --candidate URI (or --rollback)")
        store = resolve_tracking_uri(tracking_uri)
        result = stage.run(
            policy,
            candidate,
            evaluation=evaluation,
            baseline=baseline,
            tracking_uri=store,
            dry_run=dry_run,
            mask_model_version=mask_model_version,
            data=data,
            masks=masks,
            evaluate_cfg=settings.evaluate,
            train_fallback=settings.train,
        )
    except stage.PromoteStageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(result, indent=2))
    for g in result["gates"]:
        mark = "[green]pass[/]" if g["passed"] else "[red]FAIL[/]"
        value = "n/a" if g["value"] is None else f"{g['value']:.4f}"
        threshold = "" if g["threshold"] is None else f"{g['threshold']:.4f}"
        console.print(
            f"  {mark} {g['name']}: {value} {g['comparison']} {threshold} {g['detail']}", soft_wrap=True
        )
    if not result["all_gates_passed"] or (not dry_run and not result.get("promoted")):
        raise typer.Exit(1)


def explain(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="models:/<name>@champion, models:/<name>/<version>, runs:/... or model.pt."
        ),
    ],
    inputs: Annotated[
        list[Path],
        typer.Option("--input", "-i", help="DICOM file, PNG/JPEG image or folder of them (repeatable)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output: <name>.overlay.png, <name>.json per image.")
    ] = Path("explain-out"),
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Site recorded for every DICOM (default: InstitutionName); optional: explain does not "
            "check sites.",
        ),
    ] = None,
    patient_id: Annotated[
        str | None,
        typer.Option(
            "--patient-id", help="PatientID for every DICOM (optional: explain does not check identifiers)."
        ),
    ] = None,
    tracking_uri: ExplainTrackingUriOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary JSON.")] = False,
) -> None:
    """Scores and an LRP heatmap overlay per image, with the model's own normalization.

    DICOM files go through the validate stage's per-file normalization with the settings stored with the
    model, and its checks that concern the image itself (readable, decodable, grayscale, frontal where
    the header says so); no site, patient id or PHI check. A file that fails one, or is not an image, is
    refused with the validation's one-line reason (exit status 1). Exit status 2: the model or an input
    path cannot be used.
    """
    import contextlib

    from isnetflow.registry.classifier import ModelLoadError, load_classifier
    from isnetflow.registry.tracking import DEFAULT_HOME, is_mlflow_uri, resolve_tracking_uri, scoped_tracking
    from isnetflow.serving.explain import ExplainError, explain_files

    # the local store is the default only for an MLflow model URI; a model.pt needs no store
    store = resolve_tracking_uri(tracking_uri, DEFAULT_HOME if is_mlflow_uri(model) else None)
    try:
        with scoped_tracking(store) if store else contextlib.nullcontext():
            loaded = load_classifier(model)
        summary = explain_files(loaded, inputs, out, patient_id=patient_id, site=site)
    except (ModelLoadError, ExplainError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    refused = [r for r in summary["images"] if r["status"] != "explained"]
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        for r in summary["images"]:
            if r["status"] == "explained":
                scores = ", ".join(f"{c} {p:.3f}" for c, p in r["scores"].items())
                typer.echo(f"{r['file']}: {r['predicted_class']} ({scores}) -> {out / r['overlay']}")
    for r in refused:
        typer.echo(f"error: {r['file']}: {r['reason']}", err=True)
    if refused:
        raise typer.Exit(1)
