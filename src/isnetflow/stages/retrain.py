"""Scheduled retraining: is there anything new to train on since the last candidate?

A scheduled pipeline run validates the current data, then calls :func:`check_data_changed`. It compares
two things with what earlier runs left behind:

* the **data fingerprint** (:func:`isnetflow.validation.data_fingerprint`: content hash, status, label,
  patient, site and role of every manifest row, independent of where the files live), and
* the **recipe** (:func:`recipe_digest`: every setting that shapes the model or the promotion decision,
  plus the code version; runtime knobs such as worker and thread counts excluded).

The run skips training when

1. the ``champion`` version's ``lineage.data_fingerprint`` equals the fingerprint and its
   ``lineage.recipe_sha256`` equals the recipe (a champion registered before recipes were recorded
   is compared on the data alone), or
2. a candidate trained on the same data with the same recipe was already **refused** by the gates
   (:func:`record_candidate_outcome`, written by the evaluation of the pipeline's candidate): the same
   inputs would train the same model and be refused again, every week.

Otherwise (new, removed or relabelled files, a changed recipe or code version, no champion yet) it
trains. Either way the decision is recorded as a run in the MLflow experiment
``isnetflow-retraining`` (tags ``retrain.*``), so a skipped week is visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isnetflow.names import RETRAIN_EXPERIMENT
from isnetflow.registry.tracking import use_tracking
from isnetflow.validation.fingerprint import data_fingerprint

if TYPE_CHECKING:
    from isnetflow.config import Settings

log = logging.getLogger(__name__)

__all__ = [
    "FINGERPRINT_TAG",
    "RECIPE_TAG",
    "RETRAIN_EXPERIMENT",
    "check_data_changed",
    "recipe_digest",
    "record_candidate_outcome",
]

#: Model-version tag holding the fingerprint of the data a registered model was trained on.
FINGERPRINT_TAG = "lineage.data_fingerprint"
#: Model-version tag holding :func:`recipe_digest` of the settings it was trained and gated with.
RECIPE_TAG = "lineage.recipe_sha256"
#: Settings sections that never shape the model (the synthetic generator is not a pipeline input).
_NOT_RECIPE_SECTIONS = frozenset({"synth"})
#: Setting names that only change how fast or where work runs, at any depth.
_RUNTIME_KNOBS = frozenset({"workers", "num_threads", "threads", "device"})


def _without_knobs(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_knobs(v) for k, v in value.items() if k not in _RUNTIME_KNOBS}
    if isinstance(value, list):
        return [_without_knobs(v) for v in value]
    return value


def recipe_digest(settings: Settings, code_version: str | None = None) -> str:
    """``"v1:" + sha256`` of the settings that shape the model or its promotion, and the code version.

    Everything in :class:`~isnetflow.config.Settings` counts (normalization, masks, training, evaluation,
    gates) except the synthetic generator and runtime knobs (``workers``, ``threads``, ``num_threads``,
    ``device``). ``code_version`` defaults to :func:`isnetflow.registry.lineage.code_version` (a git commit
    or the package version), so new code retrains once on unchanged data.
    """
    if code_version is None:
        from isnetflow.registry.lineage import code_version as current_code

        code_version = current_code()
    dumped = settings.model_dump(mode="json", exclude=set(_NOT_RECIPE_SECTIONS))
    canonical = json.dumps(
        {"settings": _without_knobs(dumped), "code": code_version}, sort_keys=True, separators=(",", ":")
    )
    return "v1:" + hashlib.sha256(canonical.encode()).hexdigest()


def _champion(model_name: str) -> tuple[str | None, str | None, str | None, str]:
    """(champion version, its fingerprint tag, its recipe tag, why there is nothing to compare with)."""
    import mlflow

    from isnetflow.registry.promotion import CHAMPION, aliases

    client = mlflow.MlflowClient()
    version = aliases(client, model_name).get(CHAMPION)
    if version is None:
        return None, None, None, f"no champion of {model_name} yet"
    tags = client.get_model_version(model_name, version).tags
    fingerprint = tags.get(FINGERPRINT_TAG) or None
    recipe = tags.get(RECIPE_TAG) or None
    if fingerprint is None:
        return version, None, recipe, f"champion v{version} has no {FINGERPRINT_TAG} tag"
    return version, fingerprint, recipe, ""


def _refused_before(model_name: str, fingerprint: str, recipe: str) -> dict[str, Any] | None:
    """The newest refused-candidate outcome for this model, data and recipe (tracking set), or None."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(RETRAIN_EXPERIMENT)
    if experiment is None or any("'" in v for v in (model_name, fingerprint, recipe)):
        return None  # nothing recorded yet, or a value the filter syntax cannot quote
    query = (
        "tags.`isnetflow.stage` = 'candidate-outcome' and tags.`retrain.outcome` = 'refused' "
        f"and tags.`retrain.registered_model` = '{model_name}' "
        f"and tags.`retrain.data_fingerprint` = '{fingerprint}' and tags.`retrain.recipe` = '{recipe}'"
    )
    runs = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"]
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    return {
        "run_id": runs[0].info.run_id,
        "failed_gates": tags.get("retrain.failed_gates", ""),
        "candidate_uri": tags.get("retrain.candidate_uri", ""),
    }


def record_candidate_outcome(
    validated_dir: str | Path,
    tracking_uri: str | None,
    model_name: str,
    *,
    recipe: str,
    all_gates_passed: bool,
    failed_gates: Sequence[str] = (),
    candidate_uri: str = "",
) -> str:
    """Record whether the pipeline's candidate passed its gates, for later data checks; returns the run id.

    A refused outcome makes :func:`check_data_changed` skip training on the same data with the same
    recipe. A passed one blocks nothing (if its promotion then fails, the next run trains again).
    """
    import mlflow

    fingerprint = data_fingerprint(validated_dir)
    use_tracking(tracking_uri, RETRAIN_EXPERIMENT)
    outcome = "passed" if all_gates_passed else "refused"
    tags = {
        "isnetflow.stage": "candidate-outcome",
        "retrain.outcome": outcome,
        "retrain.registered_model": model_name,
        "retrain.data_fingerprint": fingerprint,
        "retrain.recipe": recipe,
        "retrain.failed_gates": ", ".join(failed_gates),
        "retrain.candidate_uri": candidate_uri,
    }
    with mlflow.start_run(run_name=f"candidate-{outcome}", tags=tags) as run:
        log.info("candidate %s: %s", candidate_uri or "(unnamed)", outcome)
        return str(run.info.run_id)


def check_data_changed(
    validated_dir: str | Path,
    tracking_uri: str | None,
    model_name: str,
    *,
    skip_if_unchanged: bool = True,
    recipe: str | None = None,
    experiment: str = RETRAIN_EXPERIMENT,
) -> dict[str, Any]:
    """Compare the validated data and ``recipe`` with the champion's and with refused candidates';
    record the decision in MLflow.

    Returns ``changed`` (data or recipe differ from the champion's, or there is nothing to compare
    with), ``proceed`` (train), ``refused_before`` (the refused outcome that made it skip, or None),
    ``fingerprint``, ``recipe``, ``champion_version``, ``champion_fingerprint``,
    ``champion_recipe``, ``reason`` and the data-check ``run_id``. Without ``recipe`` only the data is
    compared (and refused candidates are not looked up).
    """
    import mlflow

    fingerprint = data_fingerprint(validated_dir)
    use_tracking(tracking_uri, experiment)
    champion_version, champion_fingerprint, champion_recipe, missing = _champion(model_name)
    refused = None
    if missing:
        changed, reason = True, missing
    elif champion_fingerprint != fingerprint:
        changed, reason = True, f"data changed since champion v{champion_version}"
    elif recipe is not None and champion_recipe is not None and champion_recipe != recipe:
        changed, reason = True, f"data unchanged but the recipe changed since champion v{champion_version}"
    else:
        changed, reason = False, f"data unchanged since champion v{champion_version}"
    if changed and skip_if_unchanged and recipe is not None:
        refused = _refused_before(model_name, fingerprint, recipe)
        if refused is not None:
            gates = refused["failed_gates"] or "gates"
            reason += (
                f"; but a candidate trained on this data with this recipe was already refused "
                f"(failed: {gates}; outcome run {refused['run_id']})"
            )
    proceed = (changed and refused is None) or not skip_if_unchanged
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
        "retrain.recipe": recipe or "",
        "retrain.champion_recipe": champion_recipe or "",
        "retrain.refused_before": refused["run_id"] if refused else "",
        "retrain.reason": reason[:4900],
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
        "recipe": recipe,
        "champion_recipe": champion_recipe,
        "refused_before": refused,
        "reason": reason,
        "registered_model": model_name,
        "run_id": run_id,
    }
