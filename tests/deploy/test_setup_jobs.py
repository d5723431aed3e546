"""The deployment's set-up Jobs and the MLflow server command, run for real on this machine.

* ``create_buckets.py`` (dev Job minio-create-buckets) against moto's in-process S3.
* The MLflow server started with the exact arguments, environment and basic_auth.ini of the rendered dev
  overlay (only the database, artifact store, bind address and port swapped for local ones), then
  ``create_pipeline_user.py`` (Job mlflow-pipeline-user) against it. Everything on 127.0.0.1.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from moto import mock_aws

from tests._ports import PortTaken, bind_failed, on_free_port
from tests.deploy.manifests import K8S, Manifest, container_env, containers, expand, generated, one


def load_script(path: Path) -> ModuleType:
    """Import a script shipped in a ConfigMap (compiled in memory: no __pycache__ left in k8s/)."""
    module = ModuleType(path.stem)
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def secret_files(tmp_path: Path, **values: str) -> dict[str, str]:
    """Write each value to a file as a mounted Secret would; returns ``{NAME_FILE: path}``."""
    env = {}
    for name, value in values.items():
        path = tmp_path / "secrets" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(value)
        env[f"{name}_FILE"] = str(path)
    return env


# -- create_buckets.py -----------------------------------------------------------------------------------

BUCKETS = load_script(K8S / "overlays" / "dev" / "minio" / "create_buckets.py")


@pytest.fixture
def fake_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


@pytest.mark.usefixtures("fake_s3")
@pytest.mark.parametrize("region", ["us-east-1", "eu-central-1"])
def test_create_buckets_is_idempotent(region: str) -> None:
    s3 = boto3.client("s3", region_name=region, aws_access_key_id="k", aws_secret_access_key="s")
    assert BUCKETS.ensure_buckets(s3, ["isnetflow"]) == {"isnetflow": "created"}
    location = s3.get_bucket_location(Bucket="isnetflow")["LocationConstraint"]
    assert (location or "us-east-1") == region
    assert BUCKETS.ensure_buckets(s3, ["mlflow-artifacts", "isnetflow"]) == {
        "mlflow-artifacts": "created",
        "isnetflow": "exists",
    }
    assert BUCKETS.ensure_buckets(s3, ["mlflow-artifacts"]) == {"mlflow-artifacts": "exists"}
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"mlflow-artifacts", "isnetflow"}


@pytest.mark.usefixtures("fake_s3")
def test_create_buckets_main_reads_secret_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in secret_files(
        tmp_path, AWS_ACCESS_KEY_ID="minio-user", AWS_SECRET_ACCESS_KEY="pw"
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ISNETFLOW_BUCKETS", "mlflow-artifacts, isnetflow")
    assert BUCKETS.main() == 0
    assert capsys.readouterr().out.splitlines() == [
        "bucket mlflow-artifacts: created",
        "bucket isnetflow: created",
    ]
    monkeypatch.setenv("ISNETFLOW_BUCKETS", " ")
    assert BUCKETS.main() == 2


def test_secret_file_wins_and_keeps_inner_whitespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pw"
    path.write_text(" pass word \n")
    monkeypatch.setenv("SOME_PASSWORD", "from-env")
    assert BUCKETS.secret("SOME_PASSWORD") == "from-env"
    monkeypatch.setenv("SOME_PASSWORD_FILE", str(path))
    assert BUCKETS.secret("SOME_PASSWORD") == " pass word "


# -- the MLflow server as deployed + create_pipeline_user.py ---------------------------------------------

USERS = load_script(K8S / "base" / "mlflow" / "create_pipeline_user.py")
ADMIN_PASSWORD = "admin-" + base64.b32encode(os.urandom(10)).decode()


@dataclass
class Server:
    url: str
    admin: tuple[str, str]
    log: Path

    def status(self, path: str, *, auth: tuple[str, str] | None = None, host: str | None = None) -> int:
        request = urllib.request.Request(self.url + path)
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        if host:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


def local_command(docs: list[Manifest], root: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The MLflow container's command and non-secret environment, made runnable on 127.0.0.1."""
    c = next(c for _, c in containers(one(docs, "Deployment", "mlflow")) if c["name"] == "mlflow")
    manifest_env = container_env(c, docs)
    local = {
        "--backend-store-uri": f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination": str(root / "artifacts"),
        "--host": "127.0.0.1",
        "--port": str(port),
    }
    argv = [str(Path(sys.executable).parent / c["command"][0])]
    for arg in c["args"]:
        flag, sep, value = expand(arg, manifest_env).partition("=")
        if flag in local:
            value = local[flag]
        elif flag == "--allowed-hosts":
            value += f",127.0.0.1:{port}"
        argv.append(f"{flag}{sep}{value}")
    ini_map = generated(docs, "ConfigMap", "mlflow-auth-config")
    ini = configparser.ConfigParser()
    ini.read_string(ini_map["data"]["basic_auth.ini"])
    ini["mlflow"]["database_uri"] = f"sqlite:///{root}/auth.db"
    with (root / "basic_auth.ini").open("w") as f:
        ini.write(f)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "PG"))}
    env |= {k: v for k, v in manifest_env.items() if k.startswith("MLFLOW_") and "S3" not in k}
    env |= {
        "MLFLOW_AUTH_CONFIG_PATH": str(root / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,  # from Secret isnetflow-mlflow-admin in the cluster
        "MLFLOW_FLASK_SERVER_SECRET_KEY": base64.b32encode(os.urandom(20)).decode(),
        "HOME": str(root),
        "TMPDIR": str(root),
    }
    return argv, env


@pytest.fixture(scope="module")
def mlflow_server(
    rendered: dict[str, list[Manifest]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    docs = rendered["dev"]
    root = tmp_path_factory.mktemp("mlflow-server")
    log = root / "server.log"

    def start(port: int) -> tuple[subprocess.Popen[bytes], Server]:
        """The server on ``port``; a bind failure (the port was taken meanwhile) is retried on another."""
        argv, env = local_command(docs, root, port)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = Server(f"http://127.0.0.1:{port}", (env["MLFLOW_AUTH_ADMIN_USERNAME"], ADMIN_PASSWORD), log)
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                text = log.read_text(errors="replace")
                if bind_failed(text):
                    raise PortTaken(port)
                pytest.fail(f"mlflow server exited:\n{text[-4000:]}")
            with contextlib.suppress(OSError):
                if server.status("/health") == 200:
                    return proc, server
            if time.monotonic() > deadline:
                _stop(proc)
                pytest.fail(f"mlflow server not healthy:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)

    proc, server = on_free_port(start)
    try:
        yield server
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.integration
def test_deployed_mlflow_enforces_auth_and_allowed_hosts(mlflow_server: Server) -> None:
    api = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert mlflow_server.status(api) == 401  # basic-auth app: nothing without credentials
    assert mlflow_server.status(api, auth=(mlflow_server.admin[0], "wrong")) == 401
    assert mlflow_server.status(api, auth=mlflow_server.admin) == 200
    # DNS-rebinding protection: only the Service's names pass, the health check is exempt.
    assert mlflow_server.status(api, auth=mlflow_server.admin, host="evil.example") == 403
    for host in ("mlflow.isnetflow.svc.cluster.local:5000", "mlflow:5000", "localhost:5000"):
        assert mlflow_server.status(api, auth=mlflow_server.admin, host=host) == 200, host
    assert mlflow_server.status("/health", host="10.1.2.3:5000") == 200
    assert "huey" not in mlflow_server.log.read_text(errors="replace").lower()  # job runner is off


@pytest.mark.integration
def test_pipeline_user_job(
    mlflow_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The script switches the process to admin credentials: let monkeypatch restore the environment.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", mlflow_server.admin[0])
    files = secret_files(
        tmp_path,
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD + "\n",
        PIPELINE_USERNAME="isnetflow-pipeline",
        PIPELINE_PASSWORD="first-password-123",
    )
    for name, value in files.items():
        monkeypatch.setenv(name, value)
    assert USERS.main() == 0
    assert USERS.main() == 0
    (tmp_path / "secrets" / "PIPELINE_PASSWORD").write_text("rotated-password-456")
    assert USERS.main() == 0
    assert re.findall(r": (\w+)$", capsys.readouterr().out, flags=re.M) == ["created", "updated", "updated"]

    pipeline = ("isnetflow-pipeline", "rotated-password-456")
    api = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert mlflow_server.status(api, auth=pipeline) == 200
    assert mlflow_server.status(api, auth=("isnetflow-pipeline", "first-password-123")) == 401
    # A normal user, not an admin: may not read other users.
    assert (
        mlflow_server.status(f"/api/2.0/mlflow/users/get?username={mlflow_server.admin[0]}", auth=pipeline)
        == 403
    )
    with pytest.raises(ValueError, match="must not run as the MLflow admin"):
        USERS.ensure_pipeline_user(mlflow_server.url, mlflow_server.admin, (mlflow_server.admin[0], "x"))
