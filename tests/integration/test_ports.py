"""Servers started by the tests survive a port taken between ``free_port()`` and their bind."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest

from tests import _ports
from tests._ports import PortTaken, on_free_port
from tests.integration.mlflow_server import MlflowStack, postgres_available


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port that another process holds (listening) for the whole test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_a_taken_port_is_retried_on_another(taken: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picks = iter([taken, taken])
    real = _ports.free_port
    monkeypatch.setattr(_ports, "free_port", lambda: next(picks, None) or real())
    tried = []

    def start(port: int) -> int:
        tried.append(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as exc:
                raise PortTaken(port) from exc
        return port

    assert on_free_port(start) not in (taken, None)
    assert tried[:2] == [taken, taken] and len(tried) == 3
    monkeypatch.setattr(_ports, "free_port", lambda: taken)
    with pytest.raises(RuntimeError, match="no free port after 3 attempts"):
        on_free_port(start)


@pytest.mark.integration
def test_the_mlflow_stack_starts_when_its_first_ports_are_taken(
    taken: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, then the MLflow server, each first get the held port: both must move on."""
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    # PostgreSQL's first pick is the held port, its second a free one; then the same for the MLflow server
    picks = iter([taken, 0, taken])
    real = _ports.free_port
    given: list[int] = []

    def pick() -> int:
        port = next(picks, 0) or real()
        given.append(port)
        return port

    monkeypatch.setattr(_ports, "free_port", pick)
    stack = MlflowStack().start()
    try:
        assert len(given) == 4 and given[0] == given[2] == taken  # both servers retried once
        assert stack.db_uri.endswith(f":{given[1]}/mlflow") and stack.tracking_uri.endswith(f":{given[3]}")
        with urllib.request.urlopen(f"{stack.tracking_uri}/health", timeout=10) as r:
            assert r.status == 200
    finally:
        stack.stop()
