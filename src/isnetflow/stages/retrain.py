"""Scheduled retraining: has the data changed since the champion was trained on it?

A scheduled pipeline run validates the current data, then calls :func:`check_data_changed`. It compares
the data fingerprint (:func:`isnetflow.validation.data_fingerprint`: content hash, status, label,
patient, site and role of every manifest row, independent of where the files live) with the
``lineage.data_fingerprint`` tag of the registered model's ``champion`` version. When they are equal
the run ends early; otherwise (new, removed or relabelled files, no champion yet, or a champion
registered before fingerprints existed) it trains. Either way the decision is recorded as a run in the
MLflow experiment ``isnetflow-retraining`` (tags ``retrain.*``), so a skipped week is visible.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from isnetflow.registry.tracking import use_tracking
from isnetflow.validation.fingerprint import data_fingerprint

log = logging.getLogger(__name__)

__all__ = ["FINGERPRINT_TAG", "RETRAIN_EXPERIMENT", "check_data_changed"]

#: Model-version tag holding the fingerprint of the data a registered model was trained on.
FINGERPRINT_TAG = "lineage.data_fingerprint"
#: MLflow experiment of the data-check runs.
RETRAIN_EXPERIMENT = "isnetflow-retraining"


def _champion(model_name: str) -> tuple[str | None, str | None, str]:
    """(champion version, its fingerprint tag, why there is nothing to compare with) -- tracking set."""
    import mlflow

    from isnetflow.registry.promotion import CHAMPION, aliases

    client = mlflow.MlflowClient()
    version = aliases(client, model_name).get(CHAMPION)
    if version is None:
        return None, None, f"no champion of {model_name} yet"
    fingerprint = client.get_model_version(model_name, version).tags.get(FINGERPRINT_TAG) or None
    if fingerprint is None:
        return version, None, f"champion v{version} has no {FINGERPRINT_TAG} tag"
    return version, fingerprint, ""


def check_data_changed(
    validated_dir: str | Path,
    tracking_uri: str | None,
    model_name: str,
    *,
    skip_if_unchanged: bool = True,
    experiment: str = RETRAIN_EXPERIMENT,
) -> dict[str, Any]:
    """Compare the validated data with the champion's; record the decision in MLflow.

    Returns ``changed`` (the data differs from the champion's, or there is nothing to compare with),
    ``proceed`` (train: ``changed`` or not ``skip_if_unchanged``), ``fingerprint``,
    ``champion_version``, ``champion_fingerprint``, ``reason`` and the data-check ``run_id``.
    """
    import mlflow

    fingerprint = data_fingerprint(validated_dir)
    use_tracking(tracking_uri, experiment)
    champion_version, champion_fingerprint, missing = _champion(model_name)
    if missing:
        changed, reason = True, missing
    elif champion_fingerprint == fingerprint:
        changed, reason = False, f"data unchanged since champion v{champion_version}"
    else:
        changed, reason = True, f"data changed since champion v{champion_version}"
    proceed = changed or not skip_if_unchanged
    if not changed and proceed:
        reason += "; training anyway (skip_if_unchanged is off)"
    decision = "train" if proceed else "skip"
    tags = {
        "isnetflow.stage": "data-check",
        "retrain.decision": decision,
        "retrain.data_changed": str(changed).lower(),
        "retrain.skip_if_unchanged": str(skip_if_unchanged).lower(),
        "retrain.registered_model": model_name,
        "retrain.data_fingerprint": fingerprint,
        "retrain.champion_version": champion_version or "",
        "retrain.champion_fingerprint": champion_fingerprint or "",
        "retrain.reason": reason,
    }
    with mlflow.start_run(run_name=f"data-check-{decision}", tags=tags) as run:
        run_id = run.info.run_id
    log.info("data check: %s (%s)", decision, reason)
    return {
        "changed": changed,
        "proceed": proceed,
        "decision": decision,
        "fingerprint": fingerprint,
        "champion_version": champion_version,
        "champion_fingerprint": champion_fingerprint,
        "reason": reason,
        "registered_model": model_name,
        "run_id": run_id,
    }
