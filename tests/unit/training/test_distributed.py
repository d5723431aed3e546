"""Data-parallel training under torchrun (2 CPU processes, gloo).

* Equivalence: 2 processes x batch b give the losses and updated parameters of 1 process x batch 2b, for the
  standard and the ISNet objective (ddp_worker.py says why its network has no batch norm).
* A SIGKILL of one rank at an exact step (tests/_killpoint), then ``--resume``, ends with the final
  weights, optimizer state and selected model of the uninterrupted 2-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from isnetflow.config import TrainConfig
from isnetflow.isnet import ForegroundRangeEstimator
from isnetflow.training.distributed import SINGLE, DistContext, shard

HERE = Path(__file__).resolve().parent
WORKER = HERE / "ddp_worker.py"
KILLPOINT = HERE.parents[1] / "_killpoint"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def test_shard_interleaves_like_distributed_sampler() -> None:
    import numpy as np

    batch = np.arange(10, 18)
    parts = [shard(batch, DistContext(rank=r, world_size=2)) for r in (0, 1)]
    assert parts[0].tolist() == [10, 12, 14, 16] and parts[1].tolist() == [11, 13, 15, 17]
    assert sorted(np.concatenate(parts).tolist()) == batch.tolist()
    assert shard(batch, SINGLE) is batch


def test_foreground_statistics_merge_equals_one_pass() -> None:
    torch.manual_seed(0)
    maps = torch.rand(12, 1, 1, 8, 8) * torch.linspace(0.5, 3, 12).view(-1, 1, 1, 1, 1)
    whole = ForegroundRangeEstimator()
    whole.update(maps)
    merged, parts = ForegroundRangeEstimator(), []
    for chunk in (maps[:5], maps[5:]):
        part = ForegroundRangeEstimator()
        part.update(chunk)
        parts.append(part.state())
    for state in parts:
        merged.merge(*state)
    assert merged.count == 12
    assert merged.result() == pytest.approx(whole.result(), rel=1e-12)


@pytest.mark.parametrize("mode", ["standard", "isnet"])
def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path: Path, mode: str) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(WORKER), str(one), mode, "8", "4"], check=True, env=_env())
    subprocess.run([*TORCHRUN, str(WORKER), str(two), mode, "4", "4"], check=True, env=_env())
    h1, h2 = (json.loads((d / "history.json").read_text()) for d in (one, two))
    assert h1["steps"] == h2["steps"] == 4
    # per-epoch mean training loss (the ISNet epochs include the heatmap term): float32 summation order only
    assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
    a, b = (torch.load(d / "final.pt", weights_only=False) for d in (one, two))
    sys.path.insert(0, str(HERE))
    try:
        from ddp_worker import _plain_cnn
    finally:
        sys.path.remove(str(HERE))
    init = _plain_cnn(2, 1).state_dict()
    for k, w in a["model"].items():
        # 4 AdamW steps moved every tensor by far more than the tolerance: the comparison can fail
        assert (w - init[k]).abs().max() > 1e-3, k
        torch.testing.assert_close(b["model"][k], w, rtol=1e-4, atol=1e-5, msg=k)
    for i, s in a["optimizer"]["state"].items():
        t = b["optimizer"]["state"][i]
        torch.testing.assert_close(t["exp_avg"], s["exp_avg"], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(t["exp_avg_sq"], s["exp_avg_sq"], rtol=1e-3, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs (nccl)")
def test_two_gpus_with_nccl_equal_one_gpu_with_twice_the_batch(tmp_path: Path) -> None:
    """The same comparison on 2 GPUs (nccl): CUDA kernels are not bitwise deterministic, so looser."""
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(WORKER), str(one), "isnet", "8", "4", "cuda"], check=True, env=_env())
    subprocess.run([*TORCHRUN, str(WORKER), str(two), "isnet", "4", "4", "cuda"], check=True, env=_env())
    a, b = (torch.load(d / "final.pt", weights_only=False, map_location="cpu") for d in (one, two))
    for k, w in a["model"].items():
        torch.testing.assert_close(b["model"][k], w, rtol=1e-3, atol=1e-4, msg=k)


# ---- SIGKILL of one rank, then --resume, under torchrun ----------------------------------------------


def _cli_train(
    validated: Path, masks: Path, run: Path, cfg_file: Path, *extra: str, nproc: int = 2
) -> list[str]:
    exe = Path(sys.executable).parent / "isnetflow"
    return [
        str(exe), "train", "--data", str(validated), "--masks", str(masks), "--mode", "isnet",
        "--nproc", str(nproc), "--out", str(run / "out"), "--checkpoint-dir", str(run / "ck"),
        "--tracking-uri", f"sqlite:///{run}/mlflow.db", "-c", str(cfg_file), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def ddp_setup(
    tmp_path_factory: pytest.TempPathFactory, tiny_validated: Path, tiny_cohort: Path
) -> tuple[Path, Path, Path]:
    """The config (batch 2 per rank: 2 steps per epoch, 2 warm-up epochs) and the uninterrupted run."""
    root = tmp_path_factory.mktemp("ddp")
    cfg = TrainConfig(
        model="cnn-small", image_size=48, batch_size=2, epochs=4, warmup_epochs=2, val_fraction=0.3,
        test_fraction=0.1, audit_samples=4, device="cpu", checkpoint_every=1,
    )  # fmt: skip
    cfg_file = root / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"train": cfg.model_dump(mode="json")}))
    full = root / "full"
    cmd = _cli_train(tiny_validated, tiny_cohort / "masks", full, cfg_file)
    subprocess.run(cmd, check=True, env=_env(), capture_output=True)
    return cfg_file, full, tiny_cohort / "masks"


@pytest.mark.parametrize(
    ("kill_rank", "kill_step"),
    [
        pytest.param(1, 6, id="rank1-isnet-phase"),
        pytest.param(0, 3, id="rank0-warmup", marks=pytest.mark.slow),
    ],
)
def test_sigkill_one_rank_then_resume_equals_uninterrupted(
    tmp_path: Path,
    tiny_validated: Path,
    ddp_setup: tuple[Path, Path, Path],
    kill_rank: int,
    kill_step: int,
) -> None:
    cfg_file, full, masks = ddp_setup
    part = tmp_path / "part"
    killed = subprocess.run(
        _cli_train(tiny_validated, masks, part, cfg_file),
        env=_env(
            PYTHONPATH=os.pathsep.join([str(KILLPOINT), os.environ.get("PYTHONPATH", "")]),
            ISNETFLOW_KILL_AT_STEP=str(kill_step),
            ISNETFLOW_KILL_RANK=str(kill_rank),
        ),
        capture_output=True,
        text=True,
    )
    # torchrun saw the rank die, stopped the other one and failed; the newest checkpoint is the step before
    assert killed.returncode != 0, killed.stdout[-2000:]
    assert "SIGKILL" in killed.stderr or "Signal 9" in killed.stderr, killed.stderr[-3000:]
    assert (part / "ck" / "latest").read_text().strip() == f"step-{kill_step - 1:08d}.pt"
    assert not (part / "out" / "model.pt").exists()

    resume = _cli_train(tiny_validated, masks, part, cfg_file, "--resume")
    subprocess.run(resume, check=True, env=_env(), capture_output=True)
    a, b = (torch.load(run / "ck" / f"step-{8:08d}.pt", weights_only=False) for run in (full, part))
    assert a["world_size"] == b["world_size"] == 2
    for k in a["model"]:  # the final weights and batch-norm statistics
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():  # AdamW moments and step counts
        for name, v in s.items():
            assert torch.equal(v, b["optimizer"]["state"][i][name]), (i, name)
    assert a["state"]["history"] == b["state"]["history"]
    sel_a = torch.load(full / "out" / "model.pt", weights_only=False).state_dict()
    sel_b = torch.load(part / "out" / "model.pt", weights_only=False).state_dict()
    assert all(torch.equal(sel_a[k], sel_b[k]) for k in sel_a)

    # the checkpoints belong to 2 processes: resuming them with one is refused, naming both numbers
    refused = subprocess.run(
        _cli_train(tiny_validated, masks, part, cfg_file, "--resume", nproc=1),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "written by 2 process(es)" in refused.stderr + refused.stdout
