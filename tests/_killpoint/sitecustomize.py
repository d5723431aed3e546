"""Test-only kill switch: SIGKILL one training process at an exact optimizer step.

Put this folder on ``PYTHONPATH`` and set ``ISNETFLOW_KILL_AT_STEP=<n>`` (and, under torchrun,
``ISNETFLOW_KILL_RANK=<r>``, default 0). The process whose ``RANK`` matches kills itself with SIGKILL when
it is about to draw the batch of its ``n``-th optimizer step of this process's life (1-based, counted from
the start or the resume), i.e. after step ``n - 1`` and its checkpoint, before step ``n`` changes anything.
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
    _shard = _dist.shard

    def _shard_or_die(global_batch, ctx):  # type: ignore[no-untyped-def]
        _calls[0] += 1
        if _calls[0] == _at:
            os.kill(os.getpid(), signal.SIGKILL)
        return _shard(global_batch, ctx)

    _dist.shard = _shard_or_die
    _loop.shard = _shard_or_die  # the loop imported the name itself
