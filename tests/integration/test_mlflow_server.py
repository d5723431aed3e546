"""Register, gate, promote, roll back and race two promotions against a real MLflow tracking server.

The server (``mlflow server``) runs in a subprocess with a PostgreSQL backend store and its artifacts in
an S3 bucket served by moto, all on 127.0.0.1 and free ports (see ``mlflow_server.py``). The models are
trained, evaluated and promoted through the stage functions, exactly as the CLI and the kfp components
call them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.lrp import relevance
from isnetflow.registry.promotion import LOCK_SUFFIX, aliases, champion_stack, promotion_history
from isnetflow.stages import evaluate, promote, train
from tests._configs import FAST_EVALUATE, lenient_policy, tiny_train_cfg
from tests.integration.mlflow_server import MlflowStack, postgres_available

pytestmark = pytest.mark.integration

FAST = FAST_EVALUATE.model_copy(update={"n_boot": 50, "counterfactual_max": 24})
LENIENT = lenient_policy(lock_wait_seconds=120)
STRICT = lenient_policy(lock_wait_seconds=120, min_external_auc_ci_low=0.99, max_flip_rate=0.0)


@pytest.fixture(scope="session")
def mlflow_stack() -> Iterator[MlflowStack]:
    """PostgreSQL + moto S3 + ``mlflow server``, started once and torn down at the end of the session."""
    reason = postgres_available()
    if reason:
        pytest.skip(reason)
    stack = MlflowStack().start()
    try:
        yield stack
    finally:
        stack.stop()


@dataclass(frozen=True)
class Candidate:
    mode: str
    summary: dict[str, Any]
    evaluation_dir: Path
    evaluation: dict[str, Any]


@dataclass(frozen=True)
class World:
    uri: str
    stack: MlflowStack
    validated: Path
    masks: Path
    candidates: dict[str, Candidate]


@pytest.fixture(scope="module")
def world(
    mlflow_stack: MlflowStack,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_cohort: Path,
    tiny_validated: Path,
) -> Iterator[World]:
    """The tiny cohort; a standard and an ISNet model trained, logged and evaluated through the server."""
    root = tmp_path_factory.mktemp("mlflow-it")
    masks = tiny_cohort / "masks"
    uri = mlflow_stack.tracking_uri
    previous = mlflow.get_tracking_uri()
    candidates = {}
    for mode in ("standard", "isnet"):
        summary = train.run(
            tiny_train_cfg(mode),
            tiny_validated,
            masks,
            root / f"train-{mode}",
            tracking_uri=uri,
            classes=["normal", "covid"],
            progress=False,
        )
        ev_dir = root / f"eval-{mode}"
        payload = evaluate.run(
            FAST, summary["model_uri"], tiny_validated, masks, ev_dir, tracking_uri=uri, progress=False
        )
        candidates[mode] = Candidate(mode, summary, ev_dir, payload)
    try:
        yield World(uri, mlflow_stack, tiny_validated, masks, candidates)
    finally:
        mlflow.set_tracking_uri(previous)


def _client(world: World) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(world.uri)


def test_artifacts_live_in_s3_behind_the_server(world: World) -> None:
    run_id = world.candidates["standard"].summary["run_id"]
    run = _client(world).get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    keys = world.stack.s3_keys("mlartifacts/")
    assert any(run_id in k and k.endswith("train_summary.json") for k in keys)
    ev_run = world.candidates["standard"].evaluation["evaluation_run_id"]
    assert any(ev_run in k and k.endswith("figures/roc.png") for k in keys)


def test_register_gate_promote_rollback(world: World) -> None:
    client = _client(world)
    name = "cxr-isnet"
    std, isn = world.candidates["standard"], world.candidates["isnet"]
    policy = LENIENT.model_copy(update={"registered_model": name})
    strict = STRICT.model_copy(update={"registered_model": name})

    dry = promote.run(policy, std.summary["model_uri"], tracking_uri=world.uri, dry_run=True)
    assert dry["decision"] == "dry-run" and dry["would_promote"]  # evaluation found via the server

    rejected = promote.run(
        strict, std.summary["model_uri"], tracking_uri=world.uri, evaluation=std.evaluation_dir
    )
    assert not rejected["promoted"] and rejected["version"] == "1"
    assert {g["name"] for g in rejected["gates"] if not g["passed"]} >= {"external_auc_ci_low"}
    assert aliases(client, name) == {"challenger": "1"}
    tags = client.get_model_version(name, "1").tags
    assert (
        tags["gate.external_auc_ci_low.passed"] == "false"
        and tags["gate.external_auc_ci_low.threshold"] == "0.99"
    )
    assert tags["lineage.training_run_id"] == std.summary["run_id"]
    assert tags["lineage.evaluation_run_id"] == std.evaluation["evaluation_run_id"]

    first = promote.run(policy, "models:/cxr-isnet/1", tracking_uri=world.uri, evaluation=std.evaluation_dir)
    assert first["promoted"] and aliases(client, name) == {"champion": "1"}

    second = promote.run(
        policy, isn.summary["model_uri"], tracking_uri=world.uri, evaluation=isn.evaluation_dir
    )
    assert second["promoted"] and second["version"] == "2" and second["previous_champion"] == "1"
    delta = next(g for g in second["gates"] if g["name"] == "champion_auc_delta")
    std_auc = std.evaluation["splits"]["external_pooled"]["auc"]
    isn_auc = isn.evaluation["splits"]["external_pooled"]["auc"]
    assert "evaluated on" in delta["detail"]  # the champion was re-evaluated on the same data
    assert delta["value"] == pytest.approx(isn_auc - std_auc, abs=1e-9)
    assert aliases(client, name) == {"champion": "2", "previous-champion": "1"}

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    for n in (1, 3):
        proba = model.predict(np.random.default_rng(n).random((n, 1, 48, 48), dtype=np.float32))
        assert proba.shape == (n, 2) and np.allclose(proba.sum(axis=1), 1.0)
    module = model.unwrap_python_model().module
    assert isinstance(module, torch.nn.Module)
    assert relevance(module, torch.rand(2, 1, 48, 48), torch.tensor([0, 1])).shape == (2, 1, 48, 48)
    model_id = client.get_model_version(name, "2").source.removeprefix("models:/")
    assert any(k.endswith(f"{model_id}/artifacts/artifacts/model.pt") for k in world.stack.s3_keys())

    back = CliRunner().invoke(app, ["promote", "--rollback", "--name", name, "--tracking-uri", world.uri])
    assert back.exit_code == 0, back.output
    assert aliases(client, name) == {"champion": "1"} and champion_stack(client, name) == ["1"]
    shown = CliRunner().invoke(app, ["registry", "show", "--json", "--tracking-uri", world.uri])
    assert shown.exit_code == 0, shown.output
    models = {m["name"]: m for m in json.loads(shown.stdout)}
    assert [h["action"] for h in models[name]["history"]] == ["promote", "promote", "rollback"]
    assert models[name]["versions"][1]["gates"]["champion_auc_delta"]["passed"] == "true"
    assert not [n for n in models if n.endswith(LOCK_SUFFIX)]


def test_concurrent_promotions(world: World) -> None:
    """Two candidates promoted at once: one champion, the better one, and a consistent history."""
    client = _client(world)
    name = "cxr-race"
    policy = LENIENT.model_copy(update={"registered_model": name, "max_auc_drop_vs_champion": 0.0})
    barrier = threading.Barrier(2)
    results: dict[str, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def go(mode: str) -> None:
        c = world.candidates[mode]
        try:
            barrier.wait()
            results[mode] = promote.run(
                policy, c.summary["model_uri"], tracking_uri=world.uri, evaluation=c.evaluation_dir
            )
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(m,)) for m in ("standard", "isnet")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    auc = {m: c.evaluation["splits"]["external_pooled"]["auc"] for m, c in world.candidates.items()}
    version = {m: r["version"] for m, r in results.items()}
    assert sorted(version.values()) == ["1", "2"]

    history = promotion_history(client, name)
    promoted = [h["version"] for h in history if h["action"] == "promote"]
    stack = champion_stack(client, name)
    al = aliases(client, name)
    assert stack == promoted and al["champion"] == promoted[-1]  # one champion, history == stack
    assert al.get("previous-champion") == (promoted[-2] if len(promoted) == 2 else None)
    for i, h in enumerate(history):
        assert h["from"] == (promoted[i - 1] if i else None)
    if auc["standard"] != auc["isnet"]:
        best = max(auc, key=lambda m: auc[m])
        assert al["champion"] == version[best]  # whatever the order, the better model ends up champion
    # whichever got the lock second was judged against the first: re-checked under the lock when it had
    # computed its gates before the first promotion landed, or directly when it started after it
    first_mode = next(m for m, r in results.items() if r["champion_before"] is None)
    (second_mode,) = set(results) - {first_mode}
    second = results[second_mode]
    assert second["champion_before"] == version[first_mode]
    delta = next(g for g in second["gates"] if g["name"] == "champion_auc_delta")
    assert f"champion v{version[first_mode]}" in delta["detail"]
    assert delta["value"] == pytest.approx(auc[second_mode] - auc[first_mode], abs=1e-9)
    for v in version.values():
        assert client.get_model_version(name, v).tags["promotion.decision"] in ("promoted", "rejected")
    assert not [m for m in client.search_registered_models() if m.name.endswith(LOCK_SUFFIX)]


def test_kserve_manifest_points_at_the_models_bucket_location(world: World) -> None:
    """``isnetflow registry kserve`` against the real server: the storageUri is where the registered
    version's files are in the bucket (what KServe's storage initializer will copy), not the proxy URI."""
    import yaml

    client = _client(world)
    name = "cxr-kserve-it"
    version = mlflow.register_model(world.candidates["isnet"].summary["model_uri"], name)
    client.set_registered_model_alias(name, "champion", version.version)
    destination = f"s3://{world.stack.bucket}/mlartifacts"
    result = CliRunner().invoke(
        app,
        ["registry", "kserve", "--model", f"models:/{name}@champion", "--tracking-uri", world.uri,
         "--artifacts-destination", destination],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    storage = doc["spec"]["predictor"]["model"]["storageUri"]
    assert storage.startswith(f"{destination}/")
    prefix = storage.removeprefix(f"s3://{world.stack.bucket}/").rstrip("/") + "/"
    keys = world.stack.s3_keys(prefix)
    assert f"{prefix}MLmodel" in keys, keys[:10]
    assert doc["metadata"]["annotations"]["isnetflow.io/model-version"] == str(version.version)
    # without the destination, the proxied URI is refused with the reason
    result = CliRunner().invoke(
        app, ["registry", "kserve", "--model", f"models:/{name}@champion", "--tracking-uri", world.uri]
    )
    assert result.exit_code == 2 and "--artifacts-destination" in result.stderr
