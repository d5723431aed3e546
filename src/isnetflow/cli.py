"""The ``isnetflow`` command line: parse options -> typed config -> stage function.

Every subcommand has ``--help``. Options override the YAML given with ``--config``, which overrides
the defaults in :mod:`isnetflow.config`.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from isnetflow import __version__
from isnetflow.config import Settings, SynthConfig, ValidateConfig

app = typer.Typer(
    name="isnetflow",
    help="Train chest-X-ray classifiers that ignore background shortcuts (ISNet): a kfp + MLflow pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: print JSON figures for speed targets.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
registry_app = typer.Typer(help="The MLflow model registry: versions, aliases, gates.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML with any subset of the settings (see isnetflow.config)."),
]


def _settings(config: Path | None) -> Settings:
    try:
        return Settings.load(config)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _synth_config(config: Path | None, **overrides: Any) -> SynthConfig:
    cfg = _settings(config).synth
    updates = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SynthConfig.model_validate({**cfg.model_dump(), **updates})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _validate_config(config: Path | None, **overrides: Any) -> ValidateConfig:
    cfg = _settings(config).validate
    updates = {k: v for k, v in overrides.items() if v is not None}
    try:
        return ValidateConfig.model_validate({**cfg.model_dump(), **updates})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _version(value: bool) -> None:
    if value:
        typer.echo(f"isnetflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    ctx.obj = {"verbose": verbose}
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def synth(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (required unless only --preview).")
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
    workers: Annotated[int | None, typer.Option("--workers", help="Processes; 0 = all cores.")] = None,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Also write a PNG grid of examples per site and class.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write a synthetic multi-hospital chest X-ray DICOM cohort with a planted background shortcut."""
    from isnetflow.stages import synth as stage

    cfg = _synth_config(config, n=n, seed=seed, size=size, difficulty=difficulty, workers=workers)
    if strength is not None:
        cfg = cfg.model_copy(update={"shortcut": cfg.shortcut.model_copy(update={"strength": strength})})
    if out is None and preview is None:
        raise typer.BadParameter("give --out DIR (and optionally --preview PNG)")
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


@app.command()
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
    workers: Annotated[int | None, typer.Option("--workers", help="Processes; 0 = all cores.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Check every file (valid | quarantined | ignored, + reason), normalize the valid ones, run the GX suite.

    Every file found under the input is in manifest.csv. Files that are not input images are ignored,
    each with its rule: validate.exclude matches, the labels file, the masks/ folder beside the labels
    file (provided lung masks), the output folder, DICOMDIR and non-DICOM files not named *.dcm.

    Exit status 0 when the pass rate reaches the threshold and the expectation suite passes, 1 (with a
    one-line reason) otherwise, 2 when the input or the labels file cannot be used at all.
    """
    import sys

    from isnetflow.stages import validate as stage

    cfg = _validate_config(config, min_pass_rate=min_pass_rate, image_size=image_size, workers=workers)
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
    if not result.passed:
        typer.echo(f"validation failed: {result.failure}", err=True)
        raise typer.Exit(1)


@app.command()
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
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: local sqlite store).")
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment")] = "isnetflow",
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
    from isnetflow.config import TrainConfig
    from isnetflow.dicom.source import SourceError
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
        settings = Settings.model_validate_json(settings_json) if settings_json else _settings(config)
    except ValueError as exc:
        raise typer.BadParameter(f"--settings-json: {exc}") from exc
    tags: dict[str, str] = {}
    for t in tag or []:
        key, sep, value = t.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--tag {t!r}: expected KEY=VALUE")
        tags[key] = value
    base = settings.train.model_dump()
    updates = {"mode": mode, "epochs": epochs, "checkpoint_dir": checkpoint_dir}
    try:
        cfg = TrainConfig.model_validate({**base, **{k: v for k, v in updates.items() if v is not None}})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        summary = stage.run(
            cfg,
            data,
            masks,
            out,
            tracking_uri=tracking_uri,
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


def _section(config: Path | None, name: str, cls: type[Any], **overrides: Any) -> Any:
    base = getattr(_settings(config), name).model_dump()
    try:
        return cls.model_validate({**base, **{k: v for k, v in overrides.items() if v is not None}})
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command("train-segmenter")
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
    threads: Annotated[int | None, typer.Option("--threads", help="Torch CPU threads (0 = default).")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow URI (default: sqlite store under --out).")
    ] = None,
    register: Annotated[
        str | None, typer.Option("--register", help="Also register the model under this name.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Train the MONAI lung segmenter on image/mask pairs (+ synthetic phantoms); log to MLflow."""
    import shlex
    import sys

    from isnetflow.config import SegmenterTrainConfig
    from isnetflow.stages import segmenter as stage

    cfg = _section(
        config,
        "segmenter",
        SegmenterTrainConfig,
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
        summary = stage.train(cfg, images, masks, out, manifest=manifest, command=command, progress=True)
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    typer.echo(json.dumps(summary, indent=2))


@app.command()
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
    threads: Annotated[int | None, typer.Option("--threads", help="Torch CPU threads (0 = default).")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow URI for models:/ or runs:/ --model values.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Lung masks (255 lung, 0 background) at each input's original resolution, with QC per image."""
    import sys

    from isnetflow.config import MaskConfig
    from isnetflow.stages.masks import segment_files

    cfg = _section(
        config,
        "masks",
        MaskConfig,
        model=model,
        batch_size=batch_size,
        threads=threads,
        overlays=overlays or None,
    )
    try:
        summary = segment_files(inputs, out, cfg, tracking_uri=tracking_uri, progress=sys.stderr.isatty())
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


def split_sites(values: list[str] | None, known: list[str] | None = None) -> list[str]:
    """``--external-sites`` values: each a site name, or a comma-separated list of names (a value equal
    to a ``known`` site is kept whole, so a name with a comma works given on its own)."""
    from isnetflow.validation.sites import split_site_list

    return split_site_list(values or [], known or [])


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


@app.command()
def run(
    ctx: typer.Context,
    input_uri: Annotated[
        str | None, typer.Option("--input", help="DICOM folder or s3://bucket/prefix (default: synthetic).")
    ] = None,
    labels: Annotated[
        str | None, typer.Option("--labels", help="labels.csv (default: labels.csv in --input).")
    ] = None,
    external_sites: Annotated[
        list[str] | None,
        typer.Option(
            "--external-sites",
            help="Site(s) held out as external: repeat the option or give a comma-separated list.",
        ),
    ] = None,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where runs, artifacts and the local MLflow store live.")
    ] = Path(".isnetflow"),
    summary: Annotated[Path | None, typer.Option("--summary", help="Write the summary JSON here.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Synthetic cohort size (default: config).")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: sqlite in --workdir).")
    ] = None,
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

    from isnetflow.reporting import run_summary_renderable
    from isnetflow.stages import preflight

    verbose = verbose or bool((ctx.obj or {}).get("verbose"))
    try:
        settings = Settings.load(config)
        if n is not None:
            settings = settings.model_copy(
                update={"synth": SynthConfig.model_validate({**settings.synth.model_dump(), "n": n})}
            )
        checked = preflight.run(
            settings, input_uri=input_uri or "", labels_uri=labels or "", external_sites=external_sites or []
        )
    except (preflight.PreflightError, ValueError) as exc:
        first = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise _fail(first) from None
    local_runner = importlib.import_module("pipelines.local")  # kfp lives outside the domain package
    err = Console(file=sys.stderr, soft_wrap=True)  # this stderr: the run redirects sys.stderr to its log
    progress = _StageProgress(err)
    try:
        result = local_runner.run_local(
            settings,
            workdir,
            input_uri=input_uri or "",
            labels_uri=labels or "",
            external_sites=checked.external_sites,
            tracking_uri=tracking_uri,
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


HostOpt = Annotated[
    str,
    typer.Option(
        "--host",
        envvar="KF_PIPELINES_ENDPOINT",
        help="Kubeflow Pipelines API URL, e.g. http://127.0.0.1:8080.",
    ),
]
NamespaceOpt = Annotated[
    str | None, typer.Option("--namespace", help="Profile namespace (multi-user Kubeflow Pipelines).")
]
ExperimentOpt = Annotated[str, typer.Option("--experiment", help="KFP experiment (created when missing).")]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="KF_PIPELINES_TOKEN", show_envvar=True, help="Bearer token for the KFP API."
    ),
]
InputOpt = Annotated[
    str | None, typer.Option("--input", help="DICOM folder or s3://bucket/prefix (default: synthetic).")
]
LabelsOpt = Annotated[
    str | None, typer.Option("--labels", help="labels.csv (default: labels.csv in --input).")
]
ExternalOpt = Annotated[
    list[str] | None,
    typer.Option("--external-sites", help="Site(s) held out as external: repeatable, or comma-separated."),
]
RemoteTrackingOpt = Annotated[
    str,
    typer.Option(
        "--tracking-uri", help="MLflow URI for the tasks (default: MLFLOW_TRACKING_URI of the pods)."
    ),
]
ImageOpt = Annotated[
    str | None, typer.Option("--image", help="Container image of every task (default: components/image.py).")
]
SkipOpt = Annotated[
    bool,
    typer.Option(
        "--skip-if-unchanged/--always-train",
        help="End the run before training when data and recipe match the champion or a refused candidate.",
    ),
]
ServiceAccountOpt = Annotated[
    str | None, typer.Option("--service-account", help="Kubernetes service account of the run's pods.")
]
GpusOpt = Annotated[
    int,
    typer.Option(
        "--gpus",
        min=1,
        help="GPUs per training; above 1 each training runs as a Kubeflow Trainer TrainJob (torchrun).",
    ),
]
NodesOpt = Annotated[int, typer.Option("--nodes", min=1, help="Nodes to spread --gpus over (evenly).")]
UiHostOpt = Annotated[
    str | None, typer.Option("--ui-host", help="KFP UI base URL for the printed link (default: --host).")
]


def _remote() -> Any:
    import importlib

    return importlib.import_module("pipelines.remote")  # kfp lives outside the domain package


def _remote_arguments(
    remote: Any,
    settings: Settings,
    input_uri: str | None,
    labels: str | None,
    external_sites: list[str] | None,
    tracking_uri: str,
    skip_if_unchanged: bool,
    gpus: int = 1,
    nodes: int = 1,
) -> dict[str, Any]:
    try:
        return dict(
            remote.pipeline_arguments(
                settings,
                input_uri=input_uri or "",
                labels_uri=labels or "",
                external_sites=split_sites(external_sites),
                tracking_uri=tracking_uri,
                skip_if_unchanged=skip_if_unchanged,
                train_gpus=gpus,
                train_nodes=nodes,
            )
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command("compile")
def compile_(
    out: Annotated[Path, typer.Option("--out", "-o", help="Pipeline YAML to write.")] = Path("pipeline.yaml"),
    image: ImageOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Compile the training pipeline to a KFP YAML (the config's settings become the default)."""
    remote = _remote()
    path = remote.compile_pipeline(out, _settings(config), image=image)
    typer.echo(f"wrote {path}")


def _remote_call(remote: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a ``pipelines.remote`` function; a RemoteError becomes a one-line error and exit status 1."""
    try:
        return fn(*args, **kwargs)
    except remote.RemoteError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def submit(
    host: HostOpt,
    namespace: NamespaceOpt = None,
    experiment: ExperimentOpt = "isnetflow",
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="Run name (default: pipeline name + time).")
    ] = None,
    input_uri: InputOpt = None,
    labels: LabelsOpt = None,
    external_sites: ExternalOpt = None,
    tracking_uri: RemoteTrackingOpt = "",
    skip_if_unchanged: SkipOpt = True,
    gpus: GpusOpt = 1,
    nodes: NodesOpt = 1,
    token: TokenOpt = None,
    service_account: ServiceAccountOpt = None,
    image: ImageOpt = None,
    ui_host: UiHostOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Start one run of the training pipeline on a Kubeflow Pipelines server; print its id and URL."""
    remote = _remote()
    settings = _settings(config)
    arguments = _remote_arguments(
        remote, settings, input_uri, labels, external_sites, tracking_uri, skip_if_unchanged, gpus, nodes
    )
    result = _remote_call(
        remote,
        remote.submit,
        host,
        arguments,
        settings,
        namespace=namespace,
        experiment=experiment,
        run_name=run_name,
        token=token,
        service_account=service_account,
        image=image,
        ui_host=ui_host,
    )
    typer.echo(f"run id:  {result.run_id}")
    typer.echo(f"run URL: {result.url}")


@app.command()
def schedule(
    host: HostOpt,
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            help="6 fields: second minute hour day-of-month month day-of-week ('0 0 2 * * 0' = Sun 02:00).",
        ),
    ],
    namespace: NamespaceOpt = None,
    experiment: ExperimentOpt = "isnetflow",
    job_name: Annotated[str, typer.Option("--job-name", help="Recurring run name.")] = "isnetflow-retraining",
    input_uri: InputOpt = None,
    labels: LabelsOpt = None,
    external_sites: ExternalOpt = None,
    tracking_uri: RemoteTrackingOpt = "",
    skip_if_unchanged: SkipOpt = True,
    gpus: GpusOpt = 1,
    nodes: NodesOpt = 1,
    token: TokenOpt = None,
    service_account: ServiceAccountOpt = None,
    image: ImageOpt = None,
    ui_host: UiHostOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Schedule retraining: an enabled recurring run (one at a time, no catch-up); print its id."""
    from isnetflow.cron import CronError, validate_cron

    try:
        cron = validate_cron(cron)
    except CronError as exc:
        typer.echo(f"error: --cron: {exc}", err=True)
        raise typer.Exit(2) from exc
    remote = _remote()
    settings = _settings(config)
    arguments = _remote_arguments(
        remote, settings, input_uri, labels, external_sites, tracking_uri, skip_if_unchanged, gpus, nodes
    )
    result = _remote_call(
        remote,
        remote.schedule,
        host,
        cron,
        arguments,
        settings,
        namespace=namespace,
        experiment=experiment,
        job_name=job_name,
        token=token,
        service_account=service_account,
        image=image,
        ui_host=ui_host,
    )
    typer.echo(f"recurring run id:  {result.recurring_run_id}")
    typer.echo(f"recurring run URL: {result.url}")


@app.command()
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
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow tracking URI (also used for MLflow model URIs)."),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment")] = "isnetflow",
    config: ConfigOpt = None,
) -> None:
    """Metrics on the internal test split and each external site, shortcut audit, report (+ MLflow)."""
    import sys

    from isnetflow.config import EvaluateConfig
    from isnetflow.stages import evaluate as stage

    settings = _settings(config)
    cfg = _section(config, "evaluate", EvaluateConfig, n_boot=n_boot)
    try:
        payload = stage.run(
            cfg,
            model,
            data,
            masks,
            out,
            sites=sites or [],
            tracking_uri=tracking_uri,
            experiment=experiment,
            train_fallback=settings.train,
            audit=not no_audit,
            progress=sys.stderr.isatty(),
        )
    except stage.EvaluateStageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    splits, audit = payload["splits"], payload.get("audit", {})

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


@app.command()
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
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Register a candidate, gate it, move `champion` only if every gate passes (or --rollback).

    Exit status 0 when promoted (dry run: would be promoted; rollback: done), 1 when a gate failed,
    2 when the inputs cannot be used.
    """
    from isnetflow.config import PromotionPolicy
    from isnetflow.stages import promote as stage

    settings = _settings(config)
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
            typer.echo(json.dumps(stage.rollback(policy, tracking_uri=tracking_uri), indent=2))
            return
        if candidate is None:
            raise typer.BadParameter("give --candidate URI (or --rollback)")
        result = stage.run(
            policy,
            candidate,
            evaluation=evaluation,
            tracking_uri=tracking_uri,
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


@registry_app.command("show")
def registry_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    name: Annotated[
        list[str] | None, typer.Option("--name", help="Only this registered model (repeatable).")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = None,
) -> None:
    """Registered models, versions, aliases, gate results and lineage."""
    from isnetflow.stages import promote as stage

    try:
        models = stage.show(tracking_uri=tracking_uri, names=name or None)
    except stage.PromoteStageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(models, indent=2))
        return
    if not models:
        typer.echo("no registered models")
    for m in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in m["aliases"].items()) or "no aliases"
        typer.echo(f"{m['name']}  ({aliases})")
        for v in m["versions"]:
            gates = " ".join(
                f"{g}:{'ok' if r.get('passed') == 'true' else 'FAIL'}" for g, r in v["gates"].items()
            )
            tags = ",".join(v["aliases"])
            typer.echo(f"  v{v['version']:<4} {tags:<28} {v['decision'] or '-':<9} {gates}")


@registry_app.command("kserve")
def registry_kserve(
    model: Annotated[
        str, typer.Option("--model", "-m", help="models:/<name>@<alias> or models:/<name>/<version>.")
    ] = "models:/cxr-isnet@champion",
    name: Annotated[str, typer.Option("--name", help="InferenceService name.")] = "cxr-isnet",
    namespace: Annotated[str, typer.Option("--namespace")] = "isnetflow",
    artifacts_destination: Annotated[
        str | None,
        typer.Option(
            "--artifacts-destination",
            envvar="MLFLOW_ARTIFACTS_DESTINATION",
            help="The MLflow server's --artifacts-destination, to locate proxied (mlflow-artifacts:) models.",
        ),
    ] = None,
    min_replicas: Annotated[int, typer.Option("--min-replicas")] = 1,
    max_replicas: Annotated[int, typer.Option("--max-replicas")] = 2,
    cpu: Annotated[str, typer.Option("--cpu", help="CPU request = limit of the predictor.")] = "2",
    memory: Annotated[str, typer.Option("--memory", help="Memory request = limit of the predictor.")] = "4Gi",
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = None,
) -> None:
    """The KServe InferenceService (V2 protocol) serving a registered version, as YAML on stdout.

    Apply k8s/serving first (runtime, service account, network policy); the manifest pins the version
    the alias points to now, with the registry's artifact location as its storageUri.
    """
    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    from isnetflow.registry.kserve import inference_service, resolve_model, storage_uri
    from isnetflow.registry.tracking import default_tracking_uri

    mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    try:
        location = resolve_model(model)
        storage = storage_uri(location.artifact_uri, artifacts_destination)
        manifest = inference_service(
            location,
            storage,
            name=name,
            namespace=namespace,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            cpu=cpu,
            memory=memory,
        )
    except (ValueError, MlflowException) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        typer.echo(f"error: {model}: {message.splitlines()[0] if message else exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(yaml.safe_dump(manifest, sort_keys=False), nl=False)


@app.command()
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
            "--site", help="Site for every DICOM (as labels.csv gives it; default: InstitutionName)."
        ),
    ] = None,
    patient_id: Annotated[
        str | None,
        typer.Option("--patient-id", help="PatientID for every DICOM (as labels.csv gives it)."),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: the local store).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary JSON.")] = False,
) -> None:
    """Scores and an LRP heatmap overlay per image, with the model's own normalization.

    DICOM files go through the validate stage's per-file checks and normalization with the settings
    stored with the model; a file the validation would quarantine is refused with the same one-line
    reason (exit status 1). Exit status 2: the model or an input path cannot be used.
    """
    from isnetflow.registry.packaging import ModelLoadError, load_classifier
    from isnetflow.registry.serving import ExplainError, explain_files
    from isnetflow.registry.tracking import default_tracking_uri, is_mlflow_uri

    if is_mlflow_uri(model) or tracking_uri:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    try:
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


@bench_app.command("synth")
def bench_synth(
    n: Annotated[int, typer.Option("--n", help="Images to render.")] = 200,
    size: Annotated[int, typer.Option("--size")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Single-core synthetic generation throughput (render + DICOM encode + mask PNG), in images/s."""
    from isnetflow.bench.synth import bench_synth as run

    result = run(n=n, size=size)
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench_app.command("ingest")
def bench_ingest(
    n: Annotated[int, typer.Option("--n", help="Synthetic files to generate (without --input).")] = 400,
    size: Annotated[
        int, typer.Option("--size", help="Side of the synthetic input images, px (real CR/DX: ~2000-3000).")
    ] = 1024,
    output_size: Annotated[
        int | None, typer.Option("--output-size", help="Side of the normalized images (default: validate).")
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Interleaved rounds; the best is reported.")] = 3,
    source: Annotated[
        str | None, typer.Option("--input", help="Existing DICOM folder or s3:// prefix instead.")
    ] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="labels.csv for --input.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes; 0 = all cores.")] = 0,
    transfer_syntax: Annotated[
        str,
        typer.Option(
            "--transfer-syntax",
            help="Synthetic files stored as explicit (uncompressed), rle, jpeg-ls or jpeg2000 (lossless).",
        ),
    ] = "explicit",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Validate-stage throughput vs a bare pydicom dcmread + pixel_array loop over the same files."""
    from isnetflow.bench.ingest import TRANSFER_SYNTAXES
    from isnetflow.bench.ingest import bench_ingest as run

    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise typer.BadParameter(f"--transfer-syntax must be one of {', '.join(TRANSFER_SYNTAXES)}")
    if source is not None and transfer_syntax != "explicit":
        raise typer.BadParameter("--transfer-syntax applies to the synthetic cohort, not to --input")
    result = run(
        n=n,
        size=size,
        image_size=output_size,
        input=source,
        labels=labels,
        workers=workers,
        repeats=repeats,
        transfer_syntax=transfer_syntax,
    )
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench_app.command("segment")
def bench_segment(
    n: Annotated[int, typer.Option("--n", help="Images to segment.")] = 100,
    size: Annotated[int, typer.Option("--size", help="Side of the input PNGs in pixels.")] = 512,
    threads: Annotated[int, typer.Option("--threads", help="Torch CPU threads.")] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    model: Annotated[str | None, typer.Option("--model", help="Weights (default: shipped).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """`isnetflow segment` throughput on CPU (read, infer, post-process, QC, write), in images/s."""
    from isnetflow.bench.segment import bench_segment as run

    result = run(n=n, size=size, model=model, threads=threads, batch_size=batch_size)
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench_app.command("amp")
def bench_amp(
    model: Annotated[
        str, typer.Option("--model", help="Network name (isnetflow.nets.NETS).")
    ] = "densenet-small",
    batch: Annotated[int, typer.Option("--batch")] = 8,
    image_size: Annotated[int, typer.Option("--image-size")] = 128,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="bfloat16 or float16 (float16: CUDA).")] = "bfloat16",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Is the ISNet heatmap loss safe under autocast? Loss/heatmap/gradient error vs float32."""
    import torch

    from isnetflow.bench.lrp import amp_check
    from isnetflow.training.loop import resolve_device

    if dtype not in ("bfloat16", "float16"):
        raise typer.BadParameter(f"--dtype must be bfloat16 or float16, got {dtype!r}")
    result = amp_check(model, batch, image_size, resolve_device(device), getattr(torch, dtype))
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench_app.command("seeds")
def bench_seeds(
    seeds: Annotated[str, typer.Option("--seeds", help="Training seeds: 0-4, 0,2,5 or 1-3,7.")] = "0-4",
    input_uri: InputOpt = None,
    labels: LabelsOpt = None,
    external_sites: ExternalOpt = None,
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated subset of isnet,standard,masked.")
    ] = "isnet,standard,masked",
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Cohort, per-seed outputs and bench_seeds.json.")
    ] = Path(".isnetflow/bench-seeds"),
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: sqlite in --workdir).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON only.")] = False,
    config: ConfigOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", min=1, help="Seeds trained at once, each with an equal share of the CPU threads."
        ),
    ] = 1,
) -> None:
    """Train and evaluate the ISNet, the standard model and the lungs-only reference for every seed."""
    from isnetflow.bench.seeds import parse_seeds, seed_study, seed_table
    from isnetflow.registry.tracking import default_tracking_uri

    try:
        seed_list = parse_seeds(seeds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = _settings(config)
    chosen = [m.strip() for m in models.split(",") if m.strip()]
    out = Console(stderr=True)

    def show(row: dict[str, Any]) -> None:
        if not as_json:
            brief = ", ".join(
                f"{k} internal {row[k]['internal_auc'] or float('nan'):.3f} external "
                f"{row[k]['external_auc'] or float('nan'):.3f}"
                for k in chosen
            )
            out.print(f"seed {row['seed']}: {brief}")

    result = seed_study(
        settings,
        seed_list,
        workdir,
        input_uri=input_uri or "",
        labels_uri=labels or "",
        external_sites=split_sites(external_sites),
        tracking_uri=tracking_uri or default_tracking_uri(workdir),
        models=chosen,
        progress=not as_json,
        on_seed=show,
        jobs=jobs,
    )
    if as_json:
        typer.echo(json.dumps(result))
        return
    Console(soft_wrap=True).print(seed_table(result))
    typer.echo(f"wall time {result['wall_seconds']:.0f} s; JSON: {Path(workdir) / 'bench_seeds.json'}")


@bench_app.command("training")
def bench_training(
    model: Annotated[
        str, typer.Option("--model", help="Network name (isnetflow.nets.NETS).")
    ] = "densenet-small",
    batch: Annotated[int, typer.Option("--batch")] = 8,
    image_size: Annotated[int, typer.Option("--image-size")] = 128,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per mode (after one warm-up).")] = 5,
    variant: Annotated[str, typer.Option("--variant", help="selective, stochastic or all.")] = "selective",
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads; 0 = all cores.")] = 0,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Above 1: data-parallel throughput of 1 vs N torchrun processes (batch per process) and "
            "the scaling efficiency, for both modes.",
        ),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Standard vs ISNet training step time on the same network and batch (ratio = ISNet / standard).

    With --nproc N: images/s and scaling efficiency of data-parallel training under torchrun."""
    import os

    import torch

    if nproc > 1:
        from isnetflow.bench.distributed import bench_data_parallel

        scaling = bench_data_parallel(
            nproc, model=model, batch=batch, image_size=image_size, steps=steps, device=device
        )
        typer.echo(json.dumps(scaling) if as_json else json.dumps(scaling, indent=2))
        return

    from isnetflow.bench.lrp import step_times
    from isnetflow.isnet import ISNetLossConfig
    from isnetflow.training.loop import resolve_device

    torch.set_num_threads(threads or os.cpu_count() or 1)
    dev = resolve_device(device)
    result = step_times(model, batch, image_size, dev, steps, ISNetLossConfig(variant=variant))
    result["images_per_s_standard"] = round(batch / result["standard_step_s"], 2)
    result["images_per_s_isnet"] = round(batch / result["isnet_step_s"], 2)
    result["threads"] = torch.get_num_threads()
    if dev.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(dev)
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


@bench_app.command("inference")
def bench_inference(
    model: Annotated[
        str, typer.Option("--model", help="Network name (isnetflow.nets.NETS).")
    ] = "densenet-small",
    batch: Annotated[int, typer.Option("--batch")] = 16,
    image_size: Annotated[int, typer.Option("--image-size")] = 128,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads; 0 = torch default.")] = 2,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Timed rounds, one sample of each model per round (ABBA order).")
    ] = 21,
    min_sample_s: Annotated[
        float, typer.Option("--min-sample-s", help="Back-to-back calls per sample last at least this long.")
    ] = 0.25,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """ISNet vs standard predict throughput, same network and batch (expected ratio 1.00), and explain."""
    from isnetflow.bench.inference import bench_inference as run

    result = run(
        model=model,
        batch=batch,
        image_size=image_size,
        threads=threads,
        repeats=repeats,
        min_sample_s=min_sample_s,
    )
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
