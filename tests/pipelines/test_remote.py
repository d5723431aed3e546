"""`isnetflow submit` / `schedule` / `compile` against a fake Kubeflow Pipelines API on 127.0.0.1.

The fake speaks the KFP v2beta1 REST shapes of kfp_server_api (paths and JSON field names of
``V2beta1Experiment``, ``V2beta1Run``, ``V2beta1RecurringRun``, ``V2beta1GetHealthzResponse``) and
records every request, so the tests assert exactly what kfp.Client sends.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp
import pytest
import yaml
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.config import Settings
from isnetflow_kfp.components.image import IMAGE
from isnetflow_kfp.pipelines.training import PIPELINE_NAME
from tests._ports import JSONHandler, serve_http

API = "/apis/v2beta1"
TOKEN = "test-token-123"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: Any


@dataclass
class FakeKFP:
    """KFP v2beta1: healthz, experiments (list by display_name, create), runs, recurring runs."""

    multi_user: bool = False
    experiments: list[dict[str, Any]] = field(default_factory=list)
    fail: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        body = json.loads(raw_body) if raw_body else None
        self.requests.append(
            Request(
                method,
                parts.path,
                parse_qs(parts.query, keep_blank_values=True),
                headers.get("Authorization"),
                body,
            )
        )
        if (method, parts.path) in self.fail:
            status, message = self.fail[(method, parts.path)]
            return status, {"error": message, "code": 13, "message": message, "details": []}
        if (method, parts.path) == ("GET", f"{API}/healthz"):
            return 200, {"multi_user": self.multi_user, "pipeline_store": "database"}
        if (method, parts.path) == ("GET", f"{API}/experiments"):
            predicates = json.loads(parse_qs(parts.query, keep_blank_values=True)["filter"][0])["predicates"]
            found = [
                e
                for e in self.experiments
                if all(e.get(p["key"]) == p["stringValue"] for p in predicates)
                and e.get("namespace", "")
                == parse_qs(parts.query, keep_blank_values=True).get("namespace", [""])[0]
            ]
            return 200, ({"experiments": found, "total_size": len(found)} if found else {})
        if (method, parts.path) == ("POST", f"{API}/experiments"):
            exp = {**body, "experiment_id": f"exp-{len(self.experiments) + 1}", "storage_state": "AVAILABLE"}
            self.experiments.append(exp)
            return 200, exp
        if (method, parts.path) == ("POST", f"{API}/runs"):
            return 200, {
                "run_id": "run-0001",
                "display_name": body["display_name"],
                "experiment_id": body["experiment_id"],
                "state": "PENDING",
            }
        if (method, parts.path) == ("POST", f"{API}/recurringruns"):
            return 200, {
                "recurring_run_id": "rr-0001",
                "display_name": body["display_name"],
                "experiment_id": body["experiment_id"],
                "mode": body["mode"],
                "status": "ENABLED",
            }
        return 404, {"error": "Not Found", "code": 5, "message": f"no route {method} {parts.path}"}

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]


def _serve(fake: FakeKFP) -> Iterator[FakeKFP]:
    class Handler(JSONHandler):
        def _reply(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.reply(*fake.handle(self.command, self.path, self.headers, raw))

        do_GET = do_POST = do_DELETE = _reply

    with serve_http(Handler) as url:
        fake.url = url
        yield fake


@pytest.fixture(autouse=True)
def _isolated_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user kfp context file, no KF_PIPELINES_* variables from the environment."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for var in (
        "KF_PIPELINES_ENDPOINT",
        "KF_PIPELINES_UI_ENDPOINT",
        "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
        "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME",
        "KF_PIPELINES_IAP_OAUTH2_CLIENT_ID",
        "KF_PIPELINES_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def kfp_api() -> Iterator[FakeKFP]:
    yield from _serve(FakeKFP())


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "settings.yaml"
    p.write_text("synth:\n  n: 321\npromote:\n  registered_model: cxr-remote-test\n")
    return p


def _task_names(spec: dict[str, Any]) -> set[str]:
    """Every task name in the pipeline spec's DAGs (root and condition sub-DAGs)."""
    names = set(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        names |= set((comp.get("dag") or {}).get("tasks", {}))
    return names


EXPECTED_TASKS = {
    "ingest",
    "data-changed",
    "lung-masks",
    "train-model",
    "train-model-2",
    "evaluate-model",
    "evaluate-model-2",
    "promote-model",
}


def _check_pipeline_spec(body: dict[str, Any]) -> None:
    """The body carries our compiled pipeline (pipeline_spec + platform_spec) exactly as kfp sends it."""
    spec = body["pipeline_spec"]
    assert set(spec) == {"pipeline_spec", "platform_spec"}  # kfp wraps both when a platform spec exists
    pipeline = spec["pipeline_spec"]
    assert pipeline["pipelineInfo"]["name"] == PIPELINE_NAME
    assert _task_names(pipeline) >= EXPECTED_TASKS
    executors = pipeline["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    k8s = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {s["secretName"] for s in k8s["exec-train-model"]["secretAsEnv"]} == {
        "isnetflow-s3-credentials",
        "isnetflow-mlflow-credentials",
    }


def test_submit_sends_the_pipeline_and_parameters(kfp_api: FakeKFP, config: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "submit",
            "--host",
            kfp_api.url + "/",
            "--experiment",
            "isnetflow-test",
            "--run-name",
            "nightly-1",
            "--input",
            "s3://cxr/batch-7",
            "--labels",
            "s3://cxr/batch-7/labels.csv",
            "--external-sites",
            "Lakeshore",
            "--external-sites",
            "Mount Verity",
            "--tracking-uri",
            "http://mlflow.isnetflow.svc:5000",
            "--always-train",
            "--gpus",
            "8",
            "--nodes",
            "2",
            "--config",
            str(config),
        ],
        env={"KF_PIPELINES_TOKEN": TOKEN},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "run id:  run-0001",
        f"run URL: {kfp_api.url}/#/runs/details/run-0001",
    ]
    assert kfp_api.calls() == [
        ("GET", f"{API}/healthz"),  # isnetflow's probe (fails fast, one line)
        ("GET", f"{API}/healthz"),  # kfp.Client(): single- or multi-user?
        ("GET", f"{API}/experiments"),  # get the experiment by name ...
        ("POST", f"{API}/experiments"),  # ... and create it, since it does not exist
        ("POST", f"{API}/runs"),
    ]
    assert {r.authorization for r in kfp_api.requests} == {f"Bearer {TOKEN}"}
    listing, create_exp, create_run = kfp_api.requests[2:]
    assert json.loads(listing.query["filter"][0]) == {
        "predicates": [{"operation": 1, "key": "display_name", "stringValue": "isnetflow-test"}]
    }
    assert listing.query["namespace"] == [""]
    assert create_exp.body == {"display_name": "isnetflow-test", "namespace": ""}
    body = create_run.body
    assert body["display_name"] == "nightly-1"
    assert body["experiment_id"] == "exp-1"
    assert "pipeline_version_reference" not in body and "service_account" not in body
    _check_pipeline_spec(body)
    params = body["runtime_config"]["parameters"]
    assert set(params) == {
        "settings_json",
        "input_uri",
        "labels_uri",
        "external_sites_json",
        "tracking_uri",
        "skip_if_unchanged",
        "train_gpus",
        "train_nodes",
    }
    assert (params["train_gpus"], params["train_nodes"]) == (8, 2)  # the TrainJob path, 2 nodes x 4 GPUs
    settings = Settings.model_validate_json(params["settings_json"])
    assert settings.synth.n == 321 and settings.promote.registered_model == "cxr-remote-test"
    assert params["input_uri"] == "s3://cxr/batch-7"
    assert params["labels_uri"] == "s3://cxr/batch-7/labels.csv"
    assert json.loads(params["external_sites_json"]) == ["Lakeshore", "Mount Verity"]
    assert params["tracking_uri"] == "http://mlflow.isnetflow.svc:5000"
    assert params["skip_if_unchanged"] is False
    # the compiled default of settings_json is the config's too
    root_inputs = body["pipeline_spec"]["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    default = Settings.model_validate_json(root_inputs["settings_json"]["defaultValue"])
    assert default.synth.n == 321
    assert root_inputs["skip_if_unchanged"]["defaultValue"] is True


def test_schedule_creates_an_enabled_recurring_run(kfp_api: FakeKFP) -> None:
    kfp_api.experiments.append(
        {"experiment_id": "exp-42", "display_name": "retraining", "namespace": "team-cxr"}
    )
    result = CliRunner().invoke(
        app,
        [
            "schedule",
            "--host",
            kfp_api.url,
            "--cron",
            "0 0 2 * * 0",
            "--namespace",
            "team-cxr",
            "--experiment",
            "retraining",
            "--job-name",
            "weekly-retrain",
            "--input",
            "s3://cxr/incoming",
            "--service-account",
            "isnetflow-pipeline",
            "--ui-host",
            "https://kubeflow.example/pipeline",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "recurring run id:  rr-0001",
        "recurring run URL: https://kubeflow.example/pipeline/#/recurringrun/details/rr-0001",
    ]
    # with an explicit namespace kfp.Client does not ask healthz; the experiment exists: no create
    assert kfp_api.calls() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/recurringruns"),
    ]
    assert {r.authorization for r in kfp_api.requests} == {None}
    listing, create = kfp_api.requests[1:]
    assert listing.query["namespace"] == ["team-cxr"]
    body = create.body
    assert body["display_name"] == "weekly-retrain"
    assert body["experiment_id"] == "exp-42"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 2 * * 0"}}
    assert body["max_concurrency"] == 1  # kfp sends the int (the model's field is an int64 string)
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["service_account"] == "isnetflow-pipeline"
    assert "0 0 2 * * 0" in body["description"]
    _check_pipeline_spec(body)
    params = body["runtime_config"]["parameters"]
    assert params["input_uri"] == "s3://cxr/incoming"
    assert params["skip_if_unchanged"] is True
    assert params["tracking_uri"] == "" and params["labels_uri"] == ""
    assert (params["train_gpus"], params["train_nodes"]) == (1, 1)  # one GPU per training, in its own pod
    assert Settings.model_validate_json(params["settings_json"]) == Settings()


def test_gpus_that_do_not_divide_over_the_nodes_are_refused_before_any_request(kfp_api: FakeKFP) -> None:
    result = CliRunner().invoke(app, ["submit", "--host", kfp_api.url, "--gpus", "3", "--nodes", "2"])
    assert result.exit_code == 2
    assert "3 training GPUs cannot be spread evenly over 2 node(s)" in result.output
    assert kfp_api.requests == []


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 2 * * 0", "has 5 field(s); Kubeflow Pipelines needs 6"),
        ("0 0 2 * * 0 2026", "has 7 field(s)"),
        ("0 0 25 * * 0", "hour field: 25 is outside 0-23"),
        ("0 0 2 ? * MON-SUN", "day-of-week field: range 'MON-SUN' runs backwards"),
    ],
)
def test_bad_cron_is_refused_before_any_request(kfp_api: FakeKFP, cron: str, message: str) -> None:
    result = CliRunner().invoke(app, ["schedule", "--host", kfp_api.url, "--cron", cron])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert kfp_api.requests == []


def test_unreachable_host_is_one_clean_line(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(app, ["submit", "--host", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: cannot reach Kubeflow Pipelines at http://127.0.0.1:{port}: [Errno 111] Connection refused"
    )
    assert "Traceback" not in result.output


def test_api_errors_are_one_clean_line(kfp_api: FakeKFP) -> None:
    kfp_api.fail[("POST", f"{API}/runs")] = (500, "failed to create a run: pipeline spec is invalid")
    result = CliRunner().invoke(app, ["submit", "--host", kfp_api.url])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: Kubeflow Pipelines API at {kfp_api.url} answered HTTP 500 Internal Server Error: "
        "failed to create a run: pipeline spec is invalid"
    )
    assert kfp_api.calls()[-1] == ("POST", f"{API}/runs")


def test_wrong_server_and_multi_user_without_namespace_fail_at_the_probe(kfp_api: FakeKFP) -> None:
    kfp_api.fail[("GET", f"{API}/healthz")] = (404, "page not found")
    result = CliRunner().invoke(app, ["submit", "--host", kfp_api.url])
    assert result.exit_code == 1
    assert (
        "healthz answered HTTP 404 page not found; is this the Kubeflow Pipelines API (v2)?" in result.stderr
    )
    assert kfp_api.calls() == [("GET", f"{API}/healthz")]  # no kfp retries (5 x 5 s)
    del kfp_api.fail[("GET", f"{API}/healthz")]
    kfp_api.multi_user = True
    result = CliRunner().invoke(app, ["schedule", "--host", kfp_api.url, "--cron", "0 0 2 * * 0"])
    assert result.exit_code == 1
    assert "is multi-user: give --namespace" in result.stderr
    assert kfp_api.calls()[1:] == [("GET", f"{API}/healthz")]


def test_compile_embeds_the_settings_and_the_image(tmp_path: Path, config: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    result = CliRunner().invoke(
        app,
        ["compile", "--out", str(out), "--config", str(config), "--image", "registry.local/isnetflow:dev"],
    )
    assert result.exit_code == 0, result.output
    spec, platform = yaml.safe_load_all(out.read_text())
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "registry.local/isnetflow:dev"
    }
    default = spec["root"]["inputDefinitions"]["parameters"]["settings_json"]["defaultValue"]
    assert "\n" not in default
    assert Settings.model_validate_json(default).synth.n == 321
    assert "kubernetes" in platform["platforms"]
