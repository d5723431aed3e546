"""Free loopback ports for the servers the tests start, and the retry their binding needs."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
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
