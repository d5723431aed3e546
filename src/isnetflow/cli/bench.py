"""Benchmarks: ``isnetflow bench ...`` prints JSON figures for the speed targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from isnetflow.cli.common import (
    ConfigOpt,
    ExternalOpt,
    InputOpt,
    JsonOpt,
    LabelsOpt,
    WorkdirTrackingUriOpt,
    console,
    load_settings,
    split_sites,
)

# the network benchmarks (amp, training, inference)
NetOpt = Annotated[str, typer.Option("--model", help="Network name (isnetflow.nets.NETS).")]
BatchOpt = Annotated[int, typer.Option("--batch")]
ImageSizeOpt = Annotated[int, typer.Option("--image-size")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def _emit(result: object, as_json: bool) -> None:
    """The figures on stdout: one line with --json, indented otherwise."""
    typer.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))


def synth(
    n: Annotated[int, typer.Option("--n", help="Images to render.")] = 200,
    size: Annotated[int, typer.Option("--size")] = 256,
    as_json: JsonOpt = False,
) -> None:
    """Single-core synthetic generation throughput (render + DICOM encode + mask PNG), in images/s."""
    from isnetflow.bench.synth import bench_synth as run

    result = run(n=n, size=size)
    _emit(result, as_json)


def ingest(
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
    as_json: JsonOpt = False,
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
    _emit(result, as_json)


def segment(
    n: Annotated[int, typer.Option("--n", help="Images to segment.")] = 100,
    size: Annotated[int, typer.Option("--size", help="Side of the input PNGs in pixels.")] = 512,
    threads: Annotated[int, typer.Option("--threads", help="Torch CPU threads.")] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    model: Annotated[str | None, typer.Option("--model", help="Weights (default: shipped).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """`isnetflow segment` throughput on CPU (read, infer, post-process, QC, write), in images/s."""
    from isnetflow.bench.segment import bench_segment as run

    result = run(n=n, size=size, model=model, threads=threads, batch_size=batch_size)
    _emit(result, as_json)


def masks(
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="NAME=PATH of real radiographs with human lung masks, repeatable; known names: hannover "
            "(default path ../shared/data/real-cxr-lungs), openist (a clone of pi-null-mezon/OpenIST).",
        ),
    ] = None,
    perturb: Annotated[
        bool,
        typer.Option("--perturb", help="Also judge every unseen image under the robustness perturbations."),
    ] = False,
    draw: Annotated[
        int,
        typer.Option(
            "--draw",
            min=0,
            help="With --perturb: the perturbations' random draw (0: the model card's; others perturb the "
            "same images with other parameters).",
        ),
    ] = 0,
    model: Annotated[
        str | None, typer.Option("--model", help="Segmenter weights (default: shipped).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for mask_bench.csv and mask_bench_gallery.png.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="First n images of each source.")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lung segmenter and mask QC against human masks on real radiographs: Dice per source, QC decisions."""
    from isnetflow.bench.masks import bench_masks, parse_source

    try:
        sources = [parse_source(s) for s in (source or ["hannover"])]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--source") from exc
    cfg = load_settings(config).masks
    result = bench_masks(
        sources, model=model, perturb=perturb, draw=draw, cfg=cfg, out=out, limit=limit, progress=not as_json
    )
    _emit(result, as_json)


def amp(
    model: NetOpt = "densenet-small",
    batch: BatchOpt = 8,
    image_size: ImageSizeOpt = 128,
    device: DeviceOpt = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="bfloat16 or float16 (float16: CUDA).")] = "bfloat16",
    as_json: JsonOpt = False,
) -> None:
    """Is the ISNet heatmap loss safe under autocast? Loss/heatmap/gradient error vs float32."""
    import torch

    from isnetflow.bench.lrp import amp_check
    from isnetflow.training.loop import resolve_device

    if dtype not in ("bfloat16", "float16"):
        raise typer.BadParameter(f"--dtype must be bfloat16 or float16, got {dtype!r}")
    result = amp_check(model, batch, image_size, resolve_device(device), getattr(torch, dtype))
    _emit(result, as_json)


def seeds(
    seeds: Annotated[str, typer.Option("--seeds", help="Training seeds: 0-4, 0,2,5 or 1-3,7.")] = "0-4",
    input_uri: InputOpt = None,
    labels: LabelsOpt = None,
    external_sites: ExternalOpt = None,
    models: Annotated[
        str,
        typer.Option(
            "--models",
            help="Comma-separated arms: isnet, standard, masked (lungs-only), swap (the ISNet's background "
            "swapping without the relevance loss), authors (the authors' recipe).",
        ),
    ] = "isnet,standard,masked",
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Cohort, per-seed outputs and bench_seeds.json.")
    ] = Path(".isnetflow/bench-seeds"),
    tracking_uri: WorkdirTrackingUriOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON only.")] = False,
    config: ConfigOpt = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", min=1, help="Seeds trained at once, each with an equal share of the CPU threads."
        ),
    ] = 1,
) -> None:
    """Train and evaluate the ISNet and its comparison arms (standard, lungs-only, swap, authors) per seed."""
    from isnetflow.bench.seeds import parse_seeds, seed_study, seed_table
    from isnetflow.registry.tracking import resolve_tracking_uri

    try:
        seed_list = parse_seeds(seeds)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = load_settings(config)
    chosen = [m.strip() for m in models.split(",") if m.strip()]

    def show(row: dict[str, Any]) -> None:
        if not as_json:
            brief = ", ".join(
                f"{k} internal {row[k]['internal_auc'] or float('nan'):.3f} external "
                f"{row[k]['external_auc'] or float('nan'):.3f}"
                for k in chosen
            )
            console.print(f"seed {row['seed']}: {brief}")

    result = seed_study(
        settings,
        seed_list,
        workdir,
        input_uri=input_uri or "",
        labels_uri=labels or "",
        external_sites=split_sites(external_sites),
        tracking_uri=resolve_tracking_uri(tracking_uri, workdir),
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


def training(
    model: NetOpt = "densenet-small",
    batch: BatchOpt = 8,
    image_size: ImageSizeOpt = 128,
    device: DeviceOpt = "auto",
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
    as_json: JsonOpt = False,
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
        _emit(scaling, as_json)
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
    _emit(result, as_json)


def inference(
    model: NetOpt = "densenet-small",
    batch: BatchOpt = 16,
    image_size: ImageSizeOpt = 128,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads; 0 = torch default.")] = 2,
    repeats: Annotated[
        int, typer.Option("--repeats", help="Timed rounds, one sample of each model per round (ABBA order).")
    ] = 21,
    min_sample_s: Annotated[
        float, typer.Option("--min-sample-s", help="Back-to-back calls per sample last at least this long.")
    ] = 0.25,
    as_json: JsonOpt = False,
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
    _emit(result, as_json)
