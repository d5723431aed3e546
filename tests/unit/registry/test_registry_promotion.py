"""Registry logic on a local SQLite store: the lock, aliases, champion stack, history and rollback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from isnetflow.evaluation.gates import GateResult
from isnetflow.registry.promotion import (
    LOCK_SUFFIX,
    LockTimeoutError,
    PromotionError,
    aliases,
    champion_stack,
    ensure_registered_model,
    promote_version,
    promotion_history,
    promotion_lock,
    registry_overview,
    rollback,
)

PASS = [GateResult("auc_gap", 0.01, 0.1, "<=", True)]
FAIL = [GateResult("auc_gap", 0.3, 0.1, "<=", False)]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> MlflowClient:
    """One SQLite store for the module (creating its schema takes seconds); each test has its own model."""
    return MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('registry')}/registry.db")


@pytest.fixture
def name(client: MlflowClient, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registered model named after the test, with versions 1-4."""
    model = "cxr-" + request.node.name.removeprefix("test_")[:40]
    ensure_registered_model(client, model)
    ensure_registered_model(client, model)  # idempotent
    for _ in range(4):
        client.create_model_version(model, source=f"file://{tmp_path}/model")
    return model


def test_lock_is_exclusive_across_threads_and_released(client: MlflowClient, name: str) -> None:
    inside: list[int] = []
    peak = [0]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for _ in range(3):
                with promotion_lock(client, name, wait=60, poll=0.02):
                    inside.append(k)
                    peak[0] = max(peak[0], len(inside))
                    time.sleep(0.02)
                    inside.remove(k)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and peak[0] == 1
    assert not [m for m in client.search_registered_models() if m.name.endswith(LOCK_SUFFIX)]


def test_lock_contends_again_when_the_holder_releases_during_the_failed_create(
    client: MlflowClient, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving that failed CI once, forced: MLflow's store answers a duplicate INSERT by reading
    the existing model back; if the holder deletes the lock just before that read, ``create`` raises
    RESOURCE_DOES_NOT_EXIST. The contender must take the lock, not fail."""
    lock = name + LOCK_SUFFIX
    client.create_registered_model(
        lock, tags={"isnetflow.lock.owner": "holder", "isnetflow.lock.expires": f"{time.time() + 60}"}
    )
    store = client._get_registry_client().store
    real_get = store.get_registered_model
    released: list[str] = []

    def get_after_release(model_name: str):  # type: ignore[no-untyped-def]
        if model_name == lock and not released:
            store.delete_registered_model(lock)  # the holder releases at this exact moment
            released.append(model_name)
        return real_get(model_name)

    monkeypatch.setattr(store, "get_registered_model", get_after_release)
    with promotion_lock(client, name, wait=5) as owner:
        assert released == [lock]
        assert real_get(lock).tags["isnetflow.lock.owner"] == owner
    with pytest.raises(Exception, match=r"not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
        real_get(lock)


def test_lock_waits_then_times_out_and_breaks_expired_leases(client: MlflowClient, name: str) -> None:
    lock = name + LOCK_SUFFIX
    client.create_registered_model(
        lock, tags={"isnetflow.lock.owner": "someone-else", "isnetflow.lock.expires": f"{time.time() + 60}"}
    )
    t0 = time.monotonic()
    with (
        pytest.raises(LockTimeoutError, match="held by someone-else"),
        promotion_lock(client, name, wait=0.3),
    ):
        pass
    assert time.monotonic() - t0 >= 0.3
    client.set_registered_model_tag(lock, "isnetflow.lock.expires", f"{time.time() - 1}")  # holder died
    with promotion_lock(client, name, wait=5) as owner:
        assert client.get_registered_model(lock).tags["isnetflow.lock.owner"] == owner
    with pytest.raises(Exception, match=r"not found|does not exist|RESOURCE_DOES_NOT_EXIST"):
        client.get_registered_model(lock)
    with pytest.raises(PromotionError, match="reserved"):
        ensure_registered_model(client, "x" + LOCK_SUFFIX)


def test_promote_reject_rollback_sequence(client: MlflowClient, name: str) -> None:
    d1 = promote_version(client, name, "1", PASS, champion_seen=None)
    assert d1.promoted and d1.previous_champion is None
    assert aliases(client, name) == {"champion": "1"}
    d2 = promote_version(client, name, "2", PASS, champion_seen="1")
    assert d2.promoted and d2.champion_before == "1" and d2.previous_champion == "1"
    assert aliases(client, name) == {"champion": "2", "previous-champion": "1"}
    d3 = promote_version(client, name, "3", FAIL, champion_seen="2")
    assert not d3.promoted and d3.reason == "failed gates: auc_gap"
    assert aliases(client, name) == {"champion": "2", "previous-champion": "1", "challenger": "3"}
    tags = client.get_model_version(name, "3").tags
    assert tags["promotion.decision"] == "rejected" and tags["gate.auc_gap.passed"] == "false"
    assert champion_stack(client, name) == ["1", "2"]

    moved = rollback(client, name)
    assert moved == {"name": name, "champion": "1", "previous_champion": None, "rolled_back": "2"}
    assert aliases(client, name) == {"champion": "1", "challenger": "3"}
    assert "promotion.rolled_back" in client.get_model_version(name, "2").tags
    with pytest.raises(PromotionError, match="no previous champion"):
        rollback(client, name)
    history = promotion_history(client, name)
    assert [(h["action"], h["version"], h["from"]) for h in history] == [
        ("promote", "1", None),
        ("promote", "2", "1"),
        ("rollback", "1", "2"),
    ]
    # promoting the challenger removes its challenger alias
    promote_version(client, name, "3", PASS, champion_seen="1")
    assert aliases(client, name) == {"champion": "3", "previous-champion": "1"}


def test_champion_changed_meanwhile_is_rechecked(client: MlflowClient, name: str) -> None:
    promote_version(client, name, "1", PASS, champion_seen=None)
    seen: list[str] = []

    def recheck_fails(new_champion: str) -> list[GateResult]:
        seen.append(new_champion)
        return [GateResult("champion_auc_delta", -0.2, -0.01, ">=", False, f"vs v{new_champion}")]

    d = promote_version(client, name, "2", PASS, champion_seen=None, recheck=recheck_fails)
    assert seen == ["1"] and d.rechecked and not d.promoted
    assert client.get_model_version(name, "2").tags["gate.champion_auc_delta.passed"] == "false"
    d = promote_version(client, name, "3", PASS, champion_seen=None)  # no way to re-check: stay put
    assert not d.promoted and "champion changed" in d.reason
    d = promote_version(client, name, "4", PASS, champion_seen=None, recheck=lambda v: PASS)
    assert d.promoted and d.rechecked and aliases(client, name)["previous-champion"] == "1"


def test_concurrent_promotions_end_with_one_champion_and_consistent_history(
    client: MlflowClient, name: str
) -> None:
    barrier = threading.Barrier(2)
    results = {}

    def go(version: str) -> None:
        barrier.wait()
        results[version] = promote_version(
            client, name, version, PASS, champion_seen=None, recheck=lambda v: PASS
        )

    threads = [threading.Thread(target=go, args=(v,)) for v in ("1", "2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["1"].promoted and results["2"].promoted
    history = promotion_history(client, name)
    order = [h["version"] for h in history]
    assert sorted(order) == ["1", "2"]
    first, second = order
    assert history[1]["from"] == first  # the second promotion saw the first as champion
    assert aliases(client, name) == {"champion": second, "previous-champion": first}
    assert champion_stack(client, name) == [first, second]


def test_stack_follows_aliases_moved_outside_isnetflow_and_overview(client: MlflowClient, name: str) -> None:
    promote_version(client, name, "1", PASS, champion_seen=None)
    client.set_registered_model_alias(name, "champion", "4")  # moved by hand in the MLflow UI
    assert champion_stack(client, name) == ["4"]
    with promotion_lock(client, name):
        listed = registry_overview(client)  # the lock model is hidden
        assert not [m for m in listed if m["name"].endswith(LOCK_SUFFIX)]
        (overview,) = registry_overview(client, [name])
    assert overview["name"] == name and overview["aliases"] == {"champion": "4"}
    assert [v["version"] for v in overview["versions"]] == ["1", "2", "3", "4"]
    assert overview["versions"][0]["gates"]["auc_gap"] == {
        "value": "0.01",
        "threshold": "0.1",
        "passed": "true",
    }
    with pytest.raises(PromotionError, match="does not exist"):
        registry_overview(client, ["nope"])
