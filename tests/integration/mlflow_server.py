"""A real MLflow tracking server for integration tests: PostgreSQL backend store + moto S3 artifacts.

:class:`MlflowStack` starts, on 127.0.0.1 and free ports only:

1. a throw-away PostgreSQL 15 cluster (``initdb`` + ``pg_ctl`` run as the ``postgres`` system user,
   because postgres refuses to run as root), trust authentication, listening on loopback only;
2. an S3 endpoint (moto's ``ThreadedMotoServer``) with one bucket;
3. ``mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://<bucket>/mlartifacts``
   with ``MLFLOW_S3_ENDPOINT_URL`` and fake AWS credentials in *its* environment only (clients upload
   through the server's artifact proxy, so they need no S3 credentials).

``stop()`` tears everything down in reverse order. Used by ``test_mlflow_server.py`` through a
session-scoped fixture; the stack skips (not fails) when PostgreSQL binaries are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests._ports import PortTaken, bind_failed, free_port, on_free_port

__all__ = ["MlflowStack", "free_port", "postgres_available"]

PG_BIN = Path(os.environ.get("ISNETFLOW_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    cmd = args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


def postgres_available() -> str | None:
    """``None`` when a PostgreSQL cluster can be started here, else the reason it cannot."""
    if not (PG_BIN / "initdb").is_file():
        return f"PostgreSQL binaries not found in {PG_BIN} (set ISNETFLOW_PG_BIN)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: cannot start postgres as the postgres user"
    return None


@dataclass
class MlflowStack:
    """PostgreSQL + moto S3 + ``mlflow server``; call :meth:`start` then :meth:`stop`."""

    bucket: str = "mlflow-it"
    workers: int = 2
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="isnetflow-mlflow-it-")))
    tracking_uri: str = ""
    db_uri: str = ""
    s3_endpoint: str = ""
    _pg_data: Path | None = None
    _moto: Any = None
    _server: subprocess.Popen[bytes] | None = None
    _log: Any = None

    # -- PostgreSQL ----------------------------------------------------------------------------
    def _start_postgres(self) -> None:
        self.root.chmod(0o755)
        data = self.root / "pgdata"
        sock = self.root / "pgsock"
        for d in (data, sock):
            d.mkdir()
            shutil.chown(d, "postgres", "postgres") if os.geteuid() == 0 else None
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        )
        self._pg_data = data
        on_free_port(lambda port: self._pg_start(data, sock, port))

    def _pg_start(self, data: Path, sock: Path, port: int) -> None:
        log = sock / "postgres.log"
        log.unlink(missing_ok=True)
        try:
            self._pg_ctl_start(data, sock, port)
        except subprocess.CalledProcessError as exc:
            if log.exists() and bind_failed(log.read_text(errors="replace")):
                raise PortTaken(port) from exc
            raise
        _as_postgres(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"]
        )
        self.db_uri = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"

    def _pg_ctl_start(self, data: Path, sock: Path, port: int) -> None:
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(sock / "postgres.log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        )

    def _stop_postgres(self) -> None:
        if self._pg_data is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self._pg_data), "-m", "immediate", "stop"])
            self._pg_data = None

    # -- S3 ------------------------------------------------------------------------------------
    def _start_s3(self) -> None:
        import boto3
        from moto.server import ThreadedMotoServer

        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.s3_endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=self.bucket)

    def s3_keys(self, prefix: str = "") -> list[str]:
        """Object keys in the artifact bucket (to check that artifacts really went to S3)."""
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys

    # -- MLflow server -------------------------------------------------------------------------
    def _start_mlflow(self, timeout: float = 120.0) -> None:
        on_free_port(lambda port: self._mlflow_start(port, timeout))

    def _mlflow_start(self, port: int, timeout: float) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_")) and k != "PYTHONPATH"
        }
        env |= {
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        self._log = (self.root / "mlflow-server.log").open("wb")
        self._server = subprocess.Popen(
            [
                str(mlflow_bin),
                "server",
                "--backend-store-uri",
                self.db_uri,
                "--artifacts-destination",
                f"s3://{self.bucket}/mlartifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(self.workers),
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.tracking_uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                text = self.server_log()
                self._stop_mlflow()
                if bind_failed(text):
                    raise PortTaken(port)
                raise RuntimeError(f"mlflow server exited early:\n{text}")
            try:
                with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s:\n{self.server_log()}")

    def server_log(self) -> str:
        p = self.root / "mlflow-server.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def _stop_mlflow(self) -> None:
        if self._server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._server.pid, 15)  # the server's own session: uvicorn and its workers
            try:
                self._server.wait(timeout=3)  # throw-away data: no need for a long graceful shutdown
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._server.pid, 9)
                self._server.wait(timeout=10)
            self._server = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop_server(self) -> None:
        """Stop the tracking server only (an outage): PostgreSQL and S3 keep their data."""
        self._stop_mlflow()

    def restart_server(self, timeout: float = 120.0) -> None:
        """Start the tracking server again on the same port, so clients keep their tracking URI."""
        self._mlflow_start(int(self.tracking_uri.rsplit(":", 1)[1]), timeout)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> MlflowStack:
        try:
            self._start_postgres()
            self._start_s3()
            self._start_mlflow()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop_mlflow()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self._stop_postgres()
        shutil.rmtree(self.root, ignore_errors=True)
