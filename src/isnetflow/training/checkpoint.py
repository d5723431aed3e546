"""Checkpoints on a local path or ``s3://bucket/prefix`` (boto3; endpoint from the AWS environment).

Layout under the checkpoint location: ``step-<global_step>.pt`` files plus ``latest`` (text: the name
of the newest complete checkpoint). Local writes go to a temporary file and are renamed into place,
and ``latest`` is updated only after the checkpoint itself is complete, so a run killed at any
instant (SIGKILL included) leaves a readable ``latest``.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

log = logging.getLogger(__name__)
__all__ = ["CheckpointError", "CheckpointStore", "scoped_location"]

#: S3 error codes that no retry fixes: the training stops at once with a message that says so
PERMANENT_S3_ERRORS = frozenset(
    {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
     "InvalidBucketName", "AccountProblem", "ExpiredToken", "InvalidToken"}
)  # fmt: skip


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read. ``permanent``: retrying cannot help (credentials,
    permissions, a missing bucket); otherwise a transient failure (timeout, connection, 5xx, throttling)."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        """``message``: what failed; ``permanent``: whether retrying cannot help."""
        super().__init__(message)
        self.permanent = permanent


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
        """``location``: a local directory (created when missing) or an ``s3://`` prefix."""
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

    def _s3_call(self, what: str, name: str, fn: Any, **kwargs: Any) -> Any:
        """One S3 request (botocore retries transient errors itself first), failures as CheckpointError."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"s3://{self._bucket}/{self._key(name)}"
        try:
            return fn(Bucket=self._bucket, Key=self._key(name), **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise
            permanent = code in PERMANENT_S3_ERRORS
            hint = " (check the credentials and the bucket policy)" if permanent else ""
            message = f"{where}: cannot {what}: {code or exc}{hint}"
            raise CheckpointError(message, permanent=permanent) from exc
        except BotoCoreError as exc:  # timeouts, refused or dropped connections
            raise CheckpointError(f"{where}: cannot {what}: {exc}", permanent=False) from exc

    def _write(self, name: str, data: bytes) -> None:
        if self.is_s3:
            self._s3_call("write", name, self._s3.put_object, Body=data)
            return
        target = Path(self.location) / name
        try:
            fd, tmp = tempfile.mkstemp(dir=self.location, prefix=f".{name}.")
        except OSError as exc:
            raise CheckpointError(f"{target}: cannot write: {exc.strerror or exc}", permanent=True) from exc
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:  # a full disk may free up; permissions and read-only mounts do not
            Path(tmp).unlink(missing_ok=True)
            permanent = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            message = f"{target}: cannot write: {exc.strerror or exc}"
            raise CheckpointError(message, permanent=permanent) from exc
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, name: str) -> bytes | None:
        if self.is_s3:
            from botocore.exceptions import ClientError

            try:
                obj = self._s3_call("read", name, self._s3.get_object)
            except ClientError:  # NoSuchKey: _s3_call re-raises only "not found"
                return None
            return bytes(obj["Body"].read())
        p = Path(self.location) / name
        return p.read_bytes() if p.exists() else None

    def _delete(self, name: str) -> None:
        if self.is_s3:
            self._s3_call("delete", name, self._s3.delete_object)
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
        """The note ``name`` written by :meth:`write_text`, stripped; ``None`` when there is none."""
        data = self._read(name)
        return data.decode().strip() if data is not None else None

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest complete checkpoint, or ``None`` when there is none.

        When the checkpoint ``latest`` names has vanished (deleted, a lifecycle rule, an interrupted
        copy), the newest older one still listed in ``history`` is used, with a warning naming both;
        when none of them is left, :class:`FileNotFoundError` says so.
        """
        latest = self._read("latest")
        if not latest:
            return None
        name = latest.decode().strip()
        listed = [h for h in (self._read("history") or b"").decode().split() if h != name]
        for candidate in [name, *reversed(listed)]:
            data = self._read(candidate)
            if data is None:
                continue
            if candidate != name:
                log.warning("%s: 'latest' names %s, which is missing: resuming from %s", self.location, name,
                            candidate)  # fmt: skip
            buf = io.BytesIO(data)
            state: dict[str, Any] = torch.load(buf, map_location=map_location, weights_only=False)
            return state
        raise FileNotFoundError(f"{self.location}: 'latest' names {name}, which is missing, and no older "
                                f"checkpoint of its history is left")  # fmt: skip
