"""Free loopback ports for the servers the tests start, the retry their binding needs, and the started
server itself (its process group, its log, a JSON request helper)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
S = TypeVar("S", bound="Server")


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


@dataclass
class Server:
    """A server a test started in its own process group, with its log."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def post_json(self, path: str, payload: Any) -> tuple[int, dict[str, Any]]:
        """POST ``payload`` (JSON, or bytes as they are) to ``url + path``; the status and the JSON answer,
        error statuses included."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        stop_group(self.process)


def launch(
    cls: type[S],
    command: list[str],
    env: dict[str, str],
    log: Path,
    url: str,
    ready_path: str,
    what: str,
    timeout: float,
    cwd: Path | None = None,
) -> S:
    """Start ``command`` in a new session with its output in ``log`` and wait until ``url + ready_path``
    answers 200 (see :func:`wait_ready`: a bind failure raises :class:`PortTaken` for
    :func:`on_free_port`)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = cls(url, proc, log)
    wait_ready(f"{url}{ready_path}", proc, log, what, timeout)
    return server


class JSONHandler(BaseHTTPRequestHandler):
    """A request handler of the fake APIs the tests serve: JSON replies, no access log on stderr."""

    def reply(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the access log (one stderr line per request) that would bury the test's output."""


@contextlib.contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (port 0: the OS picks a free one, no race) in a thread; yields the
    base URL and shuts the server down afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
