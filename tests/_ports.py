"""Free loopback ports for the servers the tests start, and the retry their binding needs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the OS picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(RuntimeError):
    """The port reported free was taken by another process before the server bound it."""


#: what servers print when they cannot bind (uvicorn/gunicorn, PostgreSQL)
_BIND_FAILURES = ("address already in use", "could not bind", "errno 98")


def bind_failed(log_text: str) -> bool:
    return any(m in log_text.lower() for m in _BIND_FAILURES)


def on_free_port(start: Callable[[int], T], attempts: int = 3) -> T:
    """``start(port)`` on a port the OS just reported free, retried on a new port when it raises
    :class:`PortTaken`: between :func:`free_port` releasing the port and the server binding it, any other
    process (a parallel test, the system) may take it."""
    for _ in range(attempts):
        with contextlib.suppress(PortTaken):
            return start(free_port())
    raise RuntimeError(f"no free port after {attempts} attempts")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM a server's process group (``start_new_session=True``: the server and what it started),
    SIGKILL what remains after ``timeout``."""
    pgid = process.pid  # start_new_session: the group id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()  # reap the leader, so that a zombie does not keep the group alive
        if not _group_alive(pgid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float) -> None:
    """Poll ``url`` until it answers 200. A server that died of a bind failure raises :class:`PortTaken`
    (so :func:`on_free_port` tries another port); one that died otherwise or never got ready, a
    RuntimeError with the end of its log. Either way the process group is stopped first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    text = log.read_text(errors="replace")
    stop_group(process)
    if bind_failed(text):
        raise PortTaken(url)
    raise RuntimeError(f"{what} did not become ready:\n{text[-3000:]}")
