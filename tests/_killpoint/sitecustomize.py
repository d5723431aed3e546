"""Test-only kill switch: SIGKILL one training process at an exact optimizer step.

Put this folder on ``PYTHONPATH`` and set ``ISNETFLOW_KILL_AT_STEP=<n>`` (and, under torchrun,
``ISNETFLOW_KILL_RANK=<r>``, default 0). The process whose ``RANK`` matches kills itself with SIGKILL when
it is about to draw the batch of its ``n``-th optimizer step of this process's life (1-based, counted from
the start or the resume), i.e. after step ``n - 1`` and its checkpoint, before step ``n`` changes anything.
The lungs-only teacher's steps (``train.distill``; no checkpoints, retrained on resume) are not counted.
Nothing else changes: processes without the variables (the CLI, torchrun's agent) import nothing here.
"""

from __future__ import annotations

import os

if os.environ.get("ISNETFLOW_KILL_AT_STEP") and os.environ.get("RANK", "0") == os.environ.get(
    "ISNETFLOW_KILL_RANK", "0"
):
    import signal

    import isnetflow.training.distributed as _dist
    import isnetflow.training.loop as _loop

    _at = int(os.environ["ISNETFLOW_KILL_AT_STEP"])
    _calls = [0]
    _teaching = [False]
    _shard = _dist.shard
    _train_teacher = _loop.train_teacher

    def _shard_or_die(global_batch, ctx):  # type: ignore[no-untyped-def]
        if _teaching[0]:
            return _shard(global_batch, ctx)
        _calls[0] += 1
        if _calls[0] == _at:
            os.kill(os.getpid(), signal.SIGKILL)
        return _shard(global_batch, ctx)

    def _train_teacher_uncounted(*args, **kwargs):  # type: ignore[no-untyped-def]
        _teaching[0] = True
        try:
            return _train_teacher(*args, **kwargs)
        finally:
            _teaching[0] = False

    _dist.shard = _shard_or_die
    _loop.shard = _shard_or_die  # the loop imported the name itself
    _loop.train_teacher = _train_teacher_uncounted
