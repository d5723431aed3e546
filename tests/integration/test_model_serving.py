"""REST serving for real: ``mlflow models serve -m models:/<name>@champion`` on 127.0.0.1.

The test fills its own registry (the session's SQLite store): a small classifier packaged with
:func:`isnetflow.registry.classifier.log_pyfunc`, registered and aliased ``champion``. The server runs
with ``--env-manager local`` (it starts uvicorn from ``PATH``, so the venv's ``bin`` goes first) on a
port the OS picked; a port taken in the meantime is retried. Predictions over HTTP must equal pyfunc's,
malformed payloads get a 4xx naming the problem, and the server is stopped at the end.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest

from isnetflow.serving.model import EXPLAIN_PARAM, HEATMAP
from tests import _ports
from tests._models import CLASSES, register_small_classifier
from tests._ports import on_free_port

pytestmark = pytest.mark.integration

NAME = "cxr-serving-test"
SIZE = 32


class Server(_ports.Server):
    def post(self, payload: Any) -> tuple[int, dict[str, Any]]:
        return self.post_json("/invocations", payload)


@pytest.fixture(scope="module")
def champion_uri() -> str:
    """A registry the test fills: one packaged classifier, aliased champion."""
    mlflow.set_experiment("serving-test")
    register_small_classifier(NAME, size=SIZE)
    return f"models:/{NAME}@champion"


def _start(model_uri: str, log: Path, timeout: float = 180.0) -> Server:
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",  # uvicorn is started from PATH
        "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
        "OMP_NUM_THREADS": "1",
    }

    def start(port: int) -> Server:
        command = [
            *(str(venv_bin / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ]
        url = f"http://127.0.0.1:{port}"
        return _ports.launch(Server, command, env, log, url, "/ping", "mlflow models serve", timeout)

    return on_free_port(start)


@pytest.fixture(scope="module")
def server(champion_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(champion_uri, tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        yield srv
    finally:
        srv.stop()


def test_rest_predictions_equal_pyfunc(server: Server, champion_uri: str) -> None:
    with urllib.request.urlopen(f"{server.url}/ping", timeout=5) as r:
        assert r.status == 200
    pyfunc = mlflow.pyfunc.load_model(champion_uri)
    rng = np.random.default_rng(0)
    for n in (1, 7):
        x = rng.random((n, 1, SIZE, SIZE), dtype=np.float32)
        status, body = server.post({"inputs": {"images": x.tolist()}})
        assert status == 200, body
        rows = body["predictions"]
        assert len(rows) == n and all(set(r) == set(CLASSES) for r in rows)
        served = np.array([[r[c] for c in CLASSES] for r in rows])
        np.testing.assert_allclose(served, pyfunc.predict(x)[CLASSES].to_numpy(), rtol=1e-5, atol=1e-7)

    x = rng.random((2, 1, SIZE, SIZE), dtype=np.float32)
    status, body = server.post({"inputs": x.tolist(), "params": {EXPLAIN_PARAM: True}})
    assert status == 200, body
    local = pyfunc.predict(x, params={EXPLAIN_PARAM: True})
    for row, (_, ref) in zip(body["predictions"], local.iterrows(), strict=True):
        assert row["explained_class"] == ref["explained_class"]
        heatmap = np.asarray(row[HEATMAP], dtype=np.float32)
        assert heatmap.shape == (SIZE, SIZE)
        np.testing.assert_allclose(heatmap, ref[HEATMAP], rtol=1e-4, atol=1e-7)


def test_malformed_payloads_get_a_4xx_naming_the_problem(server: Server) -> None:
    x = np.zeros((2, 1, SIZE, SIZE), dtype=np.float32)
    status, body = server.post({"inputs": x[:, :, : SIZE // 2].tolist()})  # wrong shape
    assert 400 <= status < 500
    assert "Shape of input (2, 1, 16, 32) does not match expected shape (-1, 1, 32, 32)" in body["message"]
    bad = [[["dark"] * SIZE] * SIZE]  # wrong dtype: strings for a float32 tensor
    status, body = server.post({"inputs": [bad]})
    assert 400 <= status < 500 and "could not convert string to float" in body["message"]
    status, body = server.post({"inputs": x.tolist(), "params": {EXPLAIN_PARAM: "maybe"}})
    assert 400 <= status < 500 and "'explain'" in body["message"] and "boolean" in body["message"]
    status, body = server.post(b"{not json")
    assert 400 <= status < 500 and body["message"]


def test_the_server_stops(champion_uri: str, server: Server) -> None:
    server.stop()
    assert server.process.returncode is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.url}/ping", timeout=2)
