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
from isnetflow.config import Settings, SynthConfig

app = typer.Typer(
    name="isnetflow",
    help="Train chest-X-ray classifiers that ignore background shortcuts (ISNet): a kfp + MLflow pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: print JSON figures for speed targets.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"isnetflow {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
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
def run(
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Where runs, artifacts and the local MLflow store live.")
    ] = Path(".isnetflow"),
    summary: Annotated[
        Path | None, typer.Option("--summary", help="Write the run summary JSON here.")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Synthetic cohort size (default from config).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the whole pipeline locally with kfp.local on the embedded defaults (the `make demo` job)."""
    import importlib

    settings = _settings(config)
    if n is not None:
        settings = settings.model_copy(update={"synth": _synth_config(config, n=n)})
    local_runner = importlib.import_module("pipelines.local")  # kfp lives outside the domain package
    result = local_runner.run_local(settings, workdir)
    text = json.dumps(result, indent=2)
    if summary is not None:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(text)
    typer.echo(text)


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


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
