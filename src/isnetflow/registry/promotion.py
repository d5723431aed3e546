"""MLflow model registry: versions, aliases, the promotion lock, promotion history and rollback.

Aliases (no deprecated stages)
------------------------------
``challenger``
    the most recently registered candidate that is not (yet) champion;
``champion``
    the production model; it moves only when every gate passed;
``previous-champion``
    the champion before the current one (what ``--rollback`` restores).

The champion history is a stack kept in the registered model's tag ``isnetflow.champion_stack`` (JSON
list of versions, newest last): a promotion pushes, a rollback pops, and ``champion`` /
``previous-champion`` are always the stack's last two entries. Every alias move is appended to
``isnetflow.promotion_history`` (JSON list of ``{action, version, from, time, by}``, newest last).

The promotion lock
------------------
MLflow has no compare-and-set on tags, but creating a registered model is atomic in every backend
store (a unique key on the name: in PostgreSQL a concurrent second ``INSERT`` waits for the first and
then fails). The lock is therefore a registered model named ``<name>--promotion-lock`` whose tags
hold the owner and the lease expiry: ``create`` succeeds for exactly one contender, the others poll
until it is deleted or its lease expires (an expired lease is broken, logged, and re-contended through
the same atomic create; a ``create`` that fails because the lock vanished between MLflow's INSERT and
its read-back also re-contends). After acquiring it the holder re-reads the aliases and the stack, so a
promotion decided against an older champion is re-checked against the current one before anything
moves. The lock model holds no versions and is hidden from :func:`registry_overview`.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from isnetflow.evaluation.gates import GateResult, all_passed

log = logging.getLogger(__name__)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "LOCK_SUFFIX",
    "PREVIOUS",
    "LockTimeoutError",
    "PromotionDecision",
    "PromotionError",
    "aliases",
    "champion_stack",
    "ensure_registered_model",
    "promote_version",
    "promotion_history",
    "promotion_lock",
    "registry_overview",
    "rollback",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous-champion"
LOCK_SUFFIX = "--promotion-lock"
TAG_STACK = "isnetflow.champion_stack"
TAG_HISTORY = "isnetflow.promotion_history"
_LOCK_OWNER = "isnetflow.lock.owner"
_LOCK_EXPIRES = "isnetflow.lock.expires"
_MAX_TAG = 4900  # registered-model tag values are limited to 5000 characters in some stores
_STACK_DEPTH = 20


class PromotionError(RuntimeError):
    """A registry operation cannot be done (message names the model and the problem)."""


class LockTimeoutError(PromotionError):
    """Another promotion held the lock for longer than the wait allowed."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def actor() -> str:
    """``user@host`` of this process, for history entries."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _is_code(exc: MlflowException, *codes: str) -> bool:
    return getattr(exc, "error_code", None) in codes


# --------------------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------------------


@contextmanager
def promotion_lock(
    client: MlflowClient, name: str, *, ttl: float = 900.0, wait: float = 300.0, poll: float = 0.2
) -> Iterator[str]:
    """Hold the promotion lock of registered model ``name``; yields the owner token.

    Raises :class:`LockTimeoutError` after ``wait`` seconds. A lock whose lease (``ttl`` seconds from
    acquisition) has expired is treated as abandoned and broken.
    """
    lock_name = f"{name}{LOCK_SUFFIX}"
    owner = f"{actor()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + wait
    while True:
        try:
            client.create_registered_model(
                lock_name,
                tags={_LOCK_OWNER: owner, _LOCK_EXPIRES: f"{time.time() + ttl:.3f}"},
                description=f"promotion lock of {name} (isnetflow); deleted when released",
            )
            break
        except MlflowException as exc:
            # RESOURCE_DOES_NOT_EXIST: MLflow's store answers a failed INSERT by reading the existing
            # model back (to tell prompts from models); a holder releasing in between makes that read
            # fail. Either way the lock was taken a moment ago: contend again.
            if _is_code(exc, "RESOURCE_DOES_NOT_EXIST"):
                continue
            if not _is_code(exc, "RESOURCE_ALREADY_EXISTS"):
                raise
        try:
            held = client.get_registered_model(lock_name)
        except MlflowException as exc:
            if _is_code(exc, "RESOURCE_DOES_NOT_EXIST"):
                continue  # released in between: contend again at once
            raise
        holder = held.tags.get(_LOCK_OWNER, "?")
        try:
            expires = float(held.tags.get(_LOCK_EXPIRES, "0"))
        except ValueError:
            expires = 0.0
        if time.time() > expires:
            log.warning("breaking the expired promotion lock of %s held by %s", name, holder)
            _delete_lock(client, lock_name, holder)
            continue
        if time.monotonic() > deadline:
            raise LockTimeoutError(
                f"registered model {name!r}: promotion lock held by {holder} for longer than {wait:.0f} s"
            )
        time.sleep(poll * (0.5 + (uuid.uuid4().int % 1000) / 1000))
    try:
        yield owner
    finally:
        _delete_lock(client, lock_name, owner)


def _delete_lock(client: MlflowClient, lock_name: str, owner: str) -> None:
    try:
        current = client.get_registered_model(lock_name)
        if current.tags.get(_LOCK_OWNER) != owner:
            log.warning("%s is now held by %s; not deleting it", lock_name, current.tags.get(_LOCK_OWNER))
            return
        client.delete_registered_model(lock_name)
    except MlflowException as exc:
        if not _is_code(exc, "RESOURCE_DOES_NOT_EXIST"):
            raise


# --------------------------------------------------------------------------------------------------
# Reading state
# --------------------------------------------------------------------------------------------------


def ensure_registered_model(client: MlflowClient, name: str, description: str = "") -> None:
    """Create registered model ``name`` when it does not exist (safe when two processes race)."""
    if name.endswith(LOCK_SUFFIX):
        raise PromotionError(f"{name!r}: names ending in {LOCK_SUFFIX!r} are reserved for locks")
    try:
        client.create_registered_model(name, description=description or None)
    except MlflowException as exc:
        if not _is_code(exc, "RESOURCE_ALREADY_EXISTS"):
            raise


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """``alias -> version`` of registered model ``name`` (``{}`` when the model does not exist)."""
    try:
        rm = client.get_registered_model(name)
    except MlflowException as exc:
        if _is_code(exc, "RESOURCE_DOES_NOT_EXIST"):
            return {}
        raise
    return {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def _json_tag(client: MlflowClient, name: str, key: str) -> list[Any]:
    tags = client.get_registered_model(name).tags
    try:
        value = json.loads(tags.get(key, "[]"))
    except json.JSONDecodeError:
        log.warning("registered model %s: tag %s is not JSON; ignoring it", name, key)
        return []
    return value if isinstance(value, list) else []


def champion_stack(client: MlflowClient, name: str) -> list[str]:
    """Champion versions, oldest first; reconciled with the aliases when the tag is missing or stale."""
    stack = [str(v) for v in _json_tag(client, name, TAG_STACK)]
    al = aliases(client, name)
    champ, prev = al.get(CHAMPION), al.get(PREVIOUS)
    if champ is None:
        return []
    if not stack or stack[-1] != champ:  # aliases moved outside isnetflow: trust the aliases
        stack = [v for v in (prev, champ) if v is not None]
    return stack


def promotion_history(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """The promotion history of registered model ``name``, oldest first (empty when none is recorded)."""
    return [e for e in _json_tag(client, name, TAG_HISTORY) if isinstance(e, dict)]


def _write_json_tag(client: MlflowClient, name: str, key: str, items: list[Any]) -> None:
    while items and len(json.dumps(items, separators=(",", ":"))) > _MAX_TAG:
        items = items[1:]
    client.set_registered_model_tag(name, key, json.dumps(items, separators=(",", ":")))


def _set_champion_aliases(client: MlflowClient, name: str, stack: list[str]) -> None:
    client.set_registered_model_alias(name, CHAMPION, stack[-1])
    if len(stack) >= 2:
        client.set_registered_model_alias(name, PREVIOUS, stack[-2])
    else:
        try:
            client.delete_registered_model_alias(name, PREVIOUS)
        except MlflowException as exc:
            if not _is_code(exc, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise


def _append_history(client: MlflowClient, name: str, entry: dict[str, Any]) -> None:
    history = promotion_history(client, name)
    history.append(entry)
    _write_json_tag(client, name, TAG_HISTORY, history)


# --------------------------------------------------------------------------------------------------
# Promotion and rollback
# --------------------------------------------------------------------------------------------------


@dataclass
class PromotionDecision:
    """What :func:`promote_version` did."""

    name: str
    version: str
    promoted: bool
    gates: list[GateResult]
    champion_before: str | None
    champion_after: str | None
    previous_champion: str | None
    reason: str
    rechecked: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record of the decision and its gates (without ``history``)."""
        return {
            "name": self.name,
            "version": self.version,
            "promoted": self.promoted,
            "decision": "promoted" if self.promoted else "rejected",
            "reason": self.reason,
            "gates": [g.as_dict() for g in self.gates],
            "champion_before": self.champion_before,
            "champion_after": self.champion_after,
            "previous_champion": self.previous_champion,
            "rechecked_against_new_champion": self.rechecked,
        }


Recheck = Callable[[str], list[GateResult]]


def set_version_tags(client: MlflowClient, name: str, version: str, tags: Mapping[str, str]) -> None:
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, str(v))


def promote_version(
    client: MlflowClient,
    name: str,
    version: str,
    gates: list[GateResult],
    *,
    champion_seen: str | None,
    recheck: Recheck | None = None,
    lock_ttl: float = 900.0,
    lock_wait: float = 300.0,
    by: str | None = None,
) -> PromotionDecision:
    """Record the gate results on ``version``, make it ``challenger`` and, if every gate passed, champion.

    ``champion_seen`` is the champion version the gates were computed against (``None``: none). Under
    the lock the aliases are re-read; if the champion changed meanwhile, ``recheck(new_champion)``
    recomputes the gates (without ``recheck`` the candidate is not promoted). The decision is written
    to the version's tags (``promotion.decision``, ``promotion.reason``, ``promotion.time``).
    """
    by = by or actor()
    with promotion_lock(client, name, ttl=lock_ttl, wait=lock_wait):
        current = aliases(client, name)
        champion_now = current.get(CHAMPION)
        rechecked = False
        reason = ""
        if all_passed(gates) and champion_now not in (champion_seen, version, None):
            # another promotion moved the champion after our gates were computed
            if recheck is None:
                reason = f"champion changed from v{champion_seen} to v{champion_now} and cannot be re-checked"
            else:
                gates = recheck(champion_now)
                rechecked = True
        passed = all_passed(gates) and not reason
        if not reason:
            failed = [g.name for g in gates if not g.passed]
            reason = "all gates passed" if passed else f"failed gates: {', '.join(failed)}"
        tags: dict[str, str] = {}
        for g in gates:
            tags.update(g.tags())
        tags.update(
            {
                "promotion.decision": "promoted" if passed else "rejected",
                "promotion.reason": reason[:500],
                "promotion.time": _now(),
                "promotion.by": by,
                "promotion.champion_before": champion_now or "",
            }
        )
        set_version_tags(client, name, version, tags)
        if not passed:
            if current.get(CHAMPION) != version:
                client.set_registered_model_alias(name, CHALLENGER, version)
            return PromotionDecision(
                name,
                version,
                False,
                gates,
                champion_now,
                champion_now,
                current.get(PREVIOUS),
                reason,
                rechecked,
            )
        stack = champion_stack(client, name)
        if not stack or stack[-1] != version:
            stack.append(version)
        stack = stack[-_STACK_DEPTH:]
        _set_champion_aliases(client, name, stack)
        _write_json_tag(client, name, TAG_STACK, stack)
        _append_history(
            client,
            name,
            {"action": "promote", "version": version, "from": champion_now, "time": _now(), "by": by},
        )
        if current.get(CHALLENGER) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
        prev = stack[-2] if len(stack) >= 2 else None
        return PromotionDecision(name, version, True, gates, champion_now, version, prev, reason, rechecked)


def rollback(
    client: MlflowClient,
    name: str,
    *,
    lock_ttl: float = 900.0,
    lock_wait: float = 300.0,
    by: str | None = None,
) -> dict[str, Any]:
    """Make ``previous-champion`` the champion again (pop the champion stack); returns what moved."""
    by = by or actor()
    with promotion_lock(client, name, ttl=lock_ttl, wait=lock_wait):
        stack = champion_stack(client, name)
        if len(stack) < 2:
            raise PromotionError(
                f"registered model {name!r}: no previous champion to roll back to (champion stack {stack})"
            )
        demoted = stack.pop()
        _set_champion_aliases(client, name, stack)
        _write_json_tag(client, name, TAG_STACK, stack)
        _append_history(
            client,
            name,
            {"action": "rollback", "version": stack[-1], "from": demoted, "time": _now(), "by": by},
        )
        set_version_tags(
            client, name, demoted, {"promotion.rolled_back": _now(), "promotion.rolled_back_by": by}
        )
        return {
            "name": name,
            "champion": stack[-1],
            "previous_champion": stack[-2] if len(stack) >= 2 else None,
            "rolled_back": demoted,
        }


# --------------------------------------------------------------------------------------------------
# Overview
# --------------------------------------------------------------------------------------------------


def _gates_from_tags(tags: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for k, v in tags.items():
        if k.startswith("gate.") and k.count(".") >= 2:
            _, gate, field_name = k.split(".", 2)
            out.setdefault(gate, {})[field_name] = v
    return dict(sorted(out.items()))


def registry_overview(client: MlflowClient, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Registered models (locks excluded) with aliases, stack, history and every version's gates/lineage."""
    models = []
    if names:
        found = []
        for n in names:
            try:
                found.append(client.get_registered_model(n))
            except MlflowException as exc:
                if _is_code(exc, "RESOURCE_DOES_NOT_EXIST"):
                    raise PromotionError(f"registered model {n!r} does not exist") from exc
                raise
    else:
        found = list(client.search_registered_models(max_results=1000))
    for rm in sorted(found, key=lambda r: r.name):
        if rm.name.endswith(LOCK_SUFFIX):
            continue
        al = {str(k): str(v) for k, v in (rm.aliases or {}).items()}
        by_version: dict[str, list[str]] = {}
        for a, v in al.items():
            by_version.setdefault(v, []).append(a)
        versions: list[dict[str, Any]] = []
        for mv in client.search_model_versions(f"name='{rm.name}'", max_results=1000):
            tags = dict(mv.tags or {})
            versions.append(
                {
                    "version": str(mv.version),
                    "aliases": sorted(by_version.get(str(mv.version), [])),
                    "run_id": mv.run_id,
                    "source": mv.source,
                    "status": mv.status,
                    "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                        timespec="seconds"
                    ),
                    "decision": tags.get("promotion.decision", ""),
                    "gates": _gates_from_tags(tags),
                    "lineage": {
                        k.removeprefix("lineage."): v for k, v in tags.items() if k.startswith("lineage.")
                    },
                    "evaluation": {
                        k.removeprefix("eval."): v for k, v in tags.items() if k.startswith("eval.")
                    },
                }
            )
        versions.sort(key=lambda d: int(d["version"]))
        try:
            stack = json.loads(rm.tags.get(TAG_STACK, "[]"))
            history = json.loads(rm.tags.get(TAG_HISTORY, "[]"))
        except json.JSONDecodeError:
            stack, history = [], []
        models.append(
            {
                "name": rm.name,
                "aliases": dict(sorted(al.items())),
                "champion_stack": stack,
                "history": history,
                "versions": versions,
            }
        )
    return models
