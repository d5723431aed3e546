"""The ``isnetflow`` command line: parse options -> typed config -> stage function.

Every subcommand has ``--help``. Options override the YAML given with ``--config``, which overrides
the defaults in :mod:`isnetflow.config` (:func:`isnetflow.cli.common.with_overrides`).

This module builds the app from the command modules; the table below is the whole command line, in the
order ``isnetflow --help`` lists it:

- :mod:`~isnetflow.cli.stages`: the pipeline's stages one by one, ``run`` (all of them, locally),
  ``evaluate``, ``promote``, ``explain``
- :mod:`~isnetflow.cli.remote`: ``compile``, ``submit``, ``schedule`` (a Kubeflow Pipelines server)
- :mod:`~isnetflow.cli.registry`: ``registry show``, ``registry kserve``
- :mod:`~isnetflow.cli.bench`: ``bench ...``
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from isnetflow import __version__
from isnetflow.cli import bench, registry, remote, stages

__all__ = ["app", "main"]

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


app.command("synth")(stages.synth)
app.command("validate")(stages.validate)
app.command("train")(stages.train)
app.command("train-segmenter")(stages.train_segmenter)
app.command("segment")(stages.segment)
app.command("run")(stages.run)
app.command("compile")(remote.compile_)
app.command("submit")(remote.submit)
app.command("schedule")(remote.schedule)
app.command("evaluate")(stages.evaluate)
app.command("promote")(stages.promote)
app.command("explain")(stages.explain)

registry_app.command("show")(registry.show)
registry_app.command("kserve")(registry.kserve)

bench_app.command("synth")(bench.synth)
bench_app.command("ingest")(bench.ingest)
bench_app.command("segment")(bench.segment)
bench_app.command("masks")(bench.masks)
bench_app.command("amp")(bench.amp)
bench_app.command("seeds")(bench.seeds)
bench_app.command("training")(bench.training)
bench_app.command("inference")(bench.inference)


def main() -> None:
    """Entry point of the ``isnetflow`` command."""
    app()
