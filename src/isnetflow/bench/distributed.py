"""``isnetflow bench training --nproc N``: data-parallel training throughput and scaling efficiency.

The same timed steps run under torchrun with 1 and with ``N`` processes (``python -m
isnetflow.bench.distributed`` is the worker): each rank trains on its own synthetic batch of ``batch``
images with the training loop's own step (cross-entropy, or the ISNet objective's
:func:`isnetflow.isnet.isnet_step`), the gradients averaged over the ranks by
:class:`isnetflow.training.distributed.DistContext`, then the optimizer step. A step's time is the slowest
rank's. Reported per mode: images/s of 1 and of ``N`` processes (``N * batch`` images per step) and the
scaling efficiency ``images/s(N) / (N * images/s(1))``: 1.0 is perfect scaling.

On CPU the processes share the machine's cores (1 process uses all of them, ``N`` processes
``cores / N`` each), so the efficiency measures the collective's overhead, not a speed-up; on a machine
with ``N`` GPUs each process gets its own GPU and nccl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["bench_data_parallel"]


def _worker(
    out: Path, model_name: str, batch: int, image_size: int, steps: int, mode: str, device: str
) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from isnetflow.bench.lrp import synthetic_batch
    from isnetflow.isnet import ISNetLossConfig, isnet_step
    from isnetflow.nets import build_model
    from isnetflow.training.distributed import distributed_env, process_group
    from isnetflow.training.loop import resolve_device

    env = distributed_env()
    dev = resolve_device(device, env.local_rank if env.distributed else None)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // env.local_world_size))
    with process_group(dev) as ctx:
        torch.manual_seed(0)
        model = build_model(model_name, 2).to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x, y, masks = synthetic_batch(batch, image_size, dev, torch.Generator().manual_seed(ctx.rank))
        cfg = ISNetLossConfig(C1=1.0, C2=1000.0)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            if mode == "isnet":
                isnet_step(
                    model, x, y, masks, cfg, all_reduce_mean=ctx.all_reduce_mean if ctx.distributed else None
                )
            else:
                F.cross_entropy(model(x), y).backward()
                ctx.average_gradients(model)
            opt.step()

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            ctx.barrier()

        step()  # warm-up: allocations, kernels, the process group's first collective
        sync()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        slowest = torch.tensor(times, dtype=torch.float64)
        if ctx.distributed:
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        if ctx.is_main:
            median = float(slowest.median())
            out.write_text(
                json.dumps(
                    {
                        "step_s": round(median, 4),
                        "images_per_s": round(batch * ctx.world_size / median, 2),
                        "threads_per_process": torch.get_num_threads(),
                        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
                        "backend": dist.get_backend() if ctx.distributed else None,
                    }
                )
            )


def _run(nproc: int, args: list[str], timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="isnetflow-bench-dp-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "isnetflow.bench.distributed", str(out), *args]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"torchrun --nproc-per-node={nproc} failed:\n{proc.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def bench_data_parallel(
    nproc: int,
    *,
    model: str = "densenet-small",
    batch: int = 8,
    image_size: int = 128,
    steps: int = 5,
    device: str = "auto",
    modes: tuple[str, ...] = ("standard", "isnet"),
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """Images/s of 1 and ``nproc`` torchrun processes per mode, and the scaling efficiency (module doc)."""
    if nproc < 2:
        raise ValueError("--nproc must be at least 2 to measure scaling")
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "nproc": nproc,
        "model": model,
        "batch_per_process": batch,
        "image_size": image_size,
        "steps": steps,
        "cpu_cores": os.cpu_count(),
    }
    for mode in modes:
        args = [model, str(batch), str(image_size), str(steps), mode, device]
        one, many = _run(1, args, timeout_s), _run(nproc, args, timeout_s)
        result[mode] = {
            "one_process": one,
            f"{nproc}_processes": many,
            "scaling_efficiency": round(many["images_per_s"] / (nproc * one["images_per_s"]), 3),
        }
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return result


if __name__ == "__main__":  # a torchrun worker of bench_data_parallel
    out_file, model_name, b, size, n_steps, mode_name, dev_name = sys.argv[1:8]
    _worker(Path(out_file), model_name, int(b), int(size), int(n_steps), mode_name, dev_name)
