"""Checkpoints on a local path or ``s3://bucket/prefix`` (boto3; endpoint from the AWS environment).

Layout under the checkpoint location: ``step-<global_step>.pt`` files plus ``latest`` (text: the name
of the newest complete checkpoint). Local writes go to a temporary file and are renamed into place,
and ``latest`` is updated only after the checkpoint itself is complete, so a run killed at any
instant (SIGKILL included) leaves a readable ``latest``.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

__all__ = ["CheckpointStore", "scoped_location"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def scoped_location(base: str | Path, scope: str, mode: str) -> str:
    """``<base>/<scope>/<mode>``: one checkpoint folder per training of a pipeline run.

    The pipeline's ISNet and standard trainings run in parallel with the same ``train.checkpoint_dir``;
    each gets its own prefix (the pipeline run id, then the mode), so neither reads, overwrites or prunes
    the other's checkpoints, and a retried task finds exactly its own. Characters outside
    ``[A-Za-z0-9._-]`` in the scope become ``-`` (a run id may hold anything an orchestrator chooses).
    """
    parts = [_UNSAFE.sub("-", p).strip("-.") for p in (scope, mode)]
    if not all(parts):
        raise ValueError(f"checkpoint scope {scope!r} / mode {mode!r}: empty after sanitizing")
    return "/".join([str(base).rstrip("/"), *parts])


class CheckpointStore:
    """Save/load training state at a local directory or an S3 prefix; keeps the newest ``keep``."""

    def __init__(self, location: str | Path, keep: int = 2) -> None:
        self.location = str(location)
        self.keep = keep
        parsed = urlparse(self.location)
        self.is_s3 = parsed.scheme == "s3"
        if self.is_s3:
            import boto3

            self._bucket = parsed.netloc
            self._prefix = parsed.path.lstrip("/").rstrip("/")
            self._s3 = boto3.client("s3")
        else:
            Path(self.location).mkdir(parents=True, exist_ok=True)

    # -- primitive I/O -------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return f"{self._prefix}/{name}" if self._prefix else name

    def _write(self, name: str, data: bytes) -> None:
        if self.is_s3:
            self._s3.put_object(Bucket=self._bucket, Key=self._key(name), Body=data)
            return
        target = Path(self.location) / name
        fd, tmp = tempfile.mkstemp(dir=self.location, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, name: str) -> bytes | None:
        if self.is_s3:
            try:
                obj = self._s3.get_object(Bucket=self._bucket, Key=self._key(name))
            except self._s3.exceptions.NoSuchKey:
                return None
            return bytes(obj["Body"].read())
        p = Path(self.location) / name
        return p.read_bytes() if p.exists() else None

    def _delete(self, name: str) -> None:
        if self.is_s3:
            self._s3.delete_object(Bucket=self._bucket, Key=self._key(name))
        else:
            (Path(self.location) / name).unlink(missing_ok=True)

    # -- public API ----------------------------------------------------------------------------
    def save(self, state: dict[str, Any], step: int) -> str:
        """Write ``state`` as ``step-<step>.pt`` and point ``latest`` at it; returns the name."""
        buf = io.BytesIO()
        torch.save(state, buf)
        name = f"step-{step:08d}.pt"
        self._write(name, buf.getvalue())
        self._write("latest", name.encode())
        history = [h for h in (self._read("history") or b"").decode().split() if h != name] + [name]
        kept, dropped = history[-max(self.keep, 1) :], history[: -max(self.keep, 1)]
        self._write("history", "\n".join(kept).encode())
        for old in dropped:  # only after 'latest' points at a newer complete checkpoint
            self._delete(old)
        return name

    def write_text(self, name: str, text: str) -> None:
        """A small text note beside the checkpoints (e.g. the MLflow run they belong to)."""
        if name == "latest" or name == "history" or name.startswith("step-"):
            raise ValueError(f"{name!r} is reserved for the checkpoints themselves")
        self._write(name, text.encode())

    def read_text(self, name: str) -> str | None:
        data = self._read(name)
        return data.decode().strip() if data is not None else None

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest complete checkpoint, or ``None`` when there is none."""
        latest = self._read("latest")
        if not latest:
            return None
        name = latest.decode().strip()
        data = self._read(name)
        if data is None:
            raise FileNotFoundError(f"{self.location}: 'latest' names {name}, which is missing")
        state: dict[str, Any] = torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
        return state
