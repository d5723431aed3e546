"""KServe's serving path for real, without a cluster: MLServer started exactly as ``k8s/serving`` runs it.

KServe's storage initializer copies the registered version's artifacts into ``/mnt/models``; the
predictor container of ``k8s/serving/servingruntime.yaml`` then runs its ``command`` with its ``env``,
plus the two variables KServe injects for an MLServer runtime (``MLSERVER_MODEL_NAME`` = the
InferenceService's name, ``MLSERVER_MODEL_URI`` = ``/mnt/models``). This test does the same on
127.0.0.1: the model is downloaded from a registry the test fills into a folder standing for
``/mnt/models``, the command and env are read from the manifest (so the test and the manifest cannot
drift), and only the ports (free ones), the host (loopback) and the writable folders (the test's tmp,
for the pod's ``/tmp`` volume) are changed. V2 requests must give pyfunc's predictions, heatmaps with
the ``explain`` parameter, and a 400 naming the problem for a malformed tensor; the server is stopped.
"""

from __future__ import annotations

import json
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
import yaml

from isnetflow.serving.model import EXPLAIN_PARAM, HEATMAP
from tests import _ports
from tests._models import CLASSES, register_small_classifier
from tests._ports import free_port, on_free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "k8s" / "serving" / "servingruntime.yaml"
NAME = "cxr-kserve-test"
SIZE = 32
#: what the pod has and this machine must replace: ports (free ones here), the /tmp volume (the test's tmp)
PORT_ENV = ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT")


class Server(_ports.Server):
    def infer(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.post_json(f"/v2/models/{NAME}/infer", payload)


def runtime_container() -> dict[str, Any]:
    runtime = yaml.safe_load(RUNTIME.read_text())
    (container,) = runtime["spec"]["containers"]
    return dict(container)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registered version, downloaded as KServe's storage initializer would put it in /mnt/models."""
    mlflow.set_experiment("kserve-runtime-test")
    register_small_classifier(NAME, size=SIZE)
    dest = tmp_path_factory.mktemp("mnt") / "models"
    dest.mkdir()
    mlflow.artifacts.download_artifacts(f"models:/{NAME}@champion", dst_path=str(dest))
    assert (dest / "MLmodel").is_file()
    return dest


def _start(models: Path, tmp: Path, timeout: float = 180.0) -> Server:
    container = runtime_container()
    command = [str(Path(sys.executable).parent / container["command"][0]), *container["command"][1:-1]]
    assert container["command"][-1] == "/mnt/models"
    env = {e["name"]: e["value"] for e in container["env"]}
    log = tmp / "mlserver.log"

    def start(http_port: int) -> Server:
        ports = {"MLSERVER_HTTP_PORT": str(http_port), **{k: str(free_port()) for k in PORT_ENV[1:]}}
        run_env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **{k: v.replace("/tmp", str(tmp)) for k, v in env.items()},
            **ports,
            "MLSERVER_HOST": "127.0.0.1",
            # what KServe injects for a runtime annotated serving.kserve.io/server-type: mlserver
            "MLSERVER_MODEL_NAME": NAME,
            "MLSERVER_MODEL_URI": str(models),
        }
        url = f"http://127.0.0.1:{http_port}"
        return _ports.launch(
            Server,
            [*command, str(models)],
            run_env,
            log,
            url,
            "/v2/health/ready",
            "MLServer",
            timeout,
            cwd=tmp,
        )

    return on_free_port(start)


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(model_dir, tmp_path_factory.mktemp("pod-tmp"))
    try:
        yield srv
    finally:
        srv.stop()


def _tensor(x: np.ndarray) -> dict[str, Any]:
    return {"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}


def test_the_runtime_class_is_isnetflows(server: Server) -> None:
    """The manifest's class is the one serving (its 400s are tested below), and the metadata is V2's."""
    assert runtime_container()["env"][0] == {
        "name": "MLSERVER_MODEL_IMPLEMENTATION",
        "value": "isnetflow.serving.mlserver_runtime.CXRMLflowRuntime",
    }
    with urllib.request.urlopen(f"{server.url}/v2/models/{NAME}", timeout=10) as r:
        meta = json.loads(r.read())
    assert meta["name"] == NAME
    images = {"name": "images", "datatype": "FP32", "shape": [-1, 1, SIZE, SIZE]}
    assert meta["inputs"] == [{**images, "parameters": {"content_type": "np"}}]
    assert [o["name"] for o in meta["outputs"]][:2] == CLASSES
    with urllib.request.urlopen(f"{server.url}/v2/health/live", timeout=10) as r:
        assert r.status == 200


def test_v2_predictions_equal_pyfunc(server: Server, model_dir: Path) -> None:
    pyfunc = mlflow.pyfunc.load_model(str(model_dir))
    rng = np.random.default_rng(1)
    for n in (1, 7):
        x = rng.random((n, 1, SIZE, SIZE), dtype=np.float32)
        status, body = server.infer({"inputs": [_tensor(x)]})
        assert status == 200, body
        outputs = {o["name"]: o for o in body["outputs"]}
        assert set(outputs) == set(CLASSES)
        assert all(outputs[c]["shape"] == [n, 1] for c in CLASSES)
        served = np.array([outputs[c]["data"] for c in CLASSES]).T
        np.testing.assert_allclose(served, pyfunc.predict(x)[CLASSES].to_numpy(), rtol=1e-5, atol=1e-7)


def test_v2_explanations_on_demand(server: Server, model_dir: Path) -> None:
    x = np.random.default_rng(2).random((2, 1, SIZE, SIZE), dtype=np.float32)
    status, body = server.infer({"inputs": [_tensor(x)], "parameters": {EXPLAIN_PARAM: True}})
    assert status == 200, body
    outputs = {o["name"]: o for o in body["outputs"]}
    local = mlflow.pyfunc.load_model(str(model_dir)).predict(x, params={EXPLAIN_PARAM: True})
    assert outputs["explained_class"]["data"] == list(local["explained_class"])
    assert outputs[HEATMAP]["parameters"]["content_type"] == "pd_json"  # one JSON S x S array per image
    for served, ref in zip(outputs[HEATMAP]["data"], local[HEATMAP], strict=True):
        heatmap = np.asarray(json.loads(served), dtype=np.float32)
        assert heatmap.shape == (SIZE, SIZE)
        np.testing.assert_allclose(heatmap, ref, rtol=1e-4, atol=1e-7)


def test_malformed_tensors_get_a_400_naming_the_problem(server: Server) -> None:
    x = np.zeros((2, 1, SIZE // 2, SIZE), dtype=np.float32)
    status, body = server.infer({"inputs": [_tensor(x)]})
    assert status == 400, body
    assert body["error"] == (
        f"{NAME}: Shape of input (2, 1, 16, 32) does not match expected shape (-1, 1, 32, 32)."
    )
    ints = np.zeros((1, 1, SIZE, SIZE), dtype=np.int32)
    status, body = server.infer({"inputs": [{**_tensor(ints), "datatype": "INT32"}]})
    assert status == 400 and "int32" in body["error"] and "float32" in body["error"], body
    status, body = server.infer({"inputs": [{**_tensor(x), "shape": [3, 1, SIZE, SIZE]}]})  # data too short
    assert status == 400 and body["error"].startswith(f"{NAME}: "), body


def test_the_server_stops(server: Server) -> None:
    server.stop()
    assert server.process.returncode is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.url}/v2/health/live", timeout=2)
