"""Promote stage: register a candidate in the MLflow model registry and move aliases behind gates.

``run`` (``isnetflow promote --candidate URI``):

1. reads the candidate's ``evaluation.json`` (``--evaluation``, or the latest evaluate-stage run of the
   candidate's training run in MLflow);
2. evaluates the current ``champion`` (if any) on the same data -- the validated folder, masks and
   sites recorded in the candidate's evaluation, checked against its manifest hash -- falling back to
   the champion's recorded metrics only when that data is unreadable and the manifest hash matches;
3. computes the gates (:mod:`isnetflow.evaluation.gates`) from the policy; ``baseline`` (the pipeline's
   standard model's ``evaluation.json`` of the same run) feeds the do-no-harm gate
   ``standard_auc_delta``; without it (a single model promoted from the command line) that gate is
   recorded as not applicable;
4. unless ``dry_run``: packages the candidate as a pyfunc (:mod:`isnetflow.registry.classifier`),
   registers it, tags the version with the gate results, the lineage and the headline evaluation,
   and calls :func:`isnetflow.registry.promotion.promote_version` (lock, re-read aliases, re-check
   against a champion that changed meanwhile, move ``champion``/``previous-champion``).

``rollback`` and ``show`` wrap the registry functions of the same names.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from isnetflow.artifacts import ArtifactError, finite
from isnetflow.artifacts.evaluation import EVALUATION_FILE, EvaluationData, EvaluationReport
from isnetflow.artifacts.validation import ValidationSummary
from isnetflow.config import EvaluateConfig, PromotionPolicy, TrainConfig
from isnetflow.evaluation.gates import (
    BaselineReference,
    ChampionReference,
    GateResult,
    all_passed,
    evaluate_gates,
    evaluation_tags,
)
from isnetflow.names import EXPERIMENT
from isnetflow.registry.classifier import ModelLoadError, load_classifier, log_pyfunc
from isnetflow.registry.lineage import code_version
from isnetflow.registry.promotion import (
    CHAMPION,
    PromotionError,
    aliases,
    ensure_registered_model,
    promote_version,
    registry_overview,
)
from isnetflow.registry.promotion import rollback as registry_rollback
from isnetflow.registry.tracking import scoped_tracking, use_tracking
from isnetflow.serving.model import LoadedClassifier
from isnetflow.validation.manifest import manifest_sha256

log = logging.getLogger(__name__)

__all__ = ["PromoteStageError", "lineage_tags", "rollback", "run", "show"]

_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


class PromoteStageError(ValueError):
    """The promotion cannot proceed (message names the URI/file and the problem)."""


def _validation_summary(evaluation: EvaluationReport) -> str:
    validated = evaluation.data.validated if evaluation.data is not None else None
    if not validated:
        return ""
    try:
        v = ValidationSummary.read_from(validated)
    except ArtifactError:
        return ""
    summary = {
        "files": v.files,
        "counts": None if v.counts is None else v.counts.model_dump(exclude_unset=True),
        "pass_rate": v.pass_rate,
        "expectations_success": None if v.expectations is None else v.expectations.success,
        "passed": v.passed,
    }
    return json.dumps(summary, separators=(",", ":"))


def lineage_tags(
    evaluation: EvaluationReport | Mapping[str, Any],
    training_run_id: str,
    *,
    mask_model_version: str = "",
    candidate_uri: str = "",
    data_fingerprint: str = "",
    recipe: str = "",
    standard_model_uri: str = "",
) -> dict[str, str]:
    """``lineage.*`` tags of a model version (data, validation, masks, training run, code, image, and the
    standard model of the same run the do-no-harm gate compared it with: "" when none).

    ``lineage.data_fingerprint`` and ``lineage.recipe_sha256`` are what scheduled retraining compares
    (see :mod:`isnetflow.stages.retrain`). The fingerprint is ``data_fingerprint`` when given, else
    the one recorded in the evaluation; ``recipe`` is known only where the training settings are (the
    pipeline), else "" (then retraining compares the data alone).
    """
    ev = EvaluationReport.of(evaluation)
    data = ev.data or EvaluationData()
    return {
        "lineage.data_manifest_sha256": data.manifest_sha256 or "",
        "lineage.data_fingerprint": data_fingerprint or data.data_fingerprint or "",
        "lineage.recipe_sha256": recipe,
        "lineage.validation_summary": _validation_summary(ev)[:4900],
        "lineage.lung_mask_model_version": mask_model_version,
        "lineage.training_run_id": training_run_id,
        "lineage.code_version": code_version(),
        "lineage.container_image": os.environ.get("ISNETFLOW_IMAGE", ""),
        "lineage.evaluation_run_id": ev.evaluation_run_id or "",
        "lineage.candidate_uri": candidate_uri,
        "lineage.standard_model_uri": standard_model_uri,
    }


#: ``eval.*`` tags read back when the champion cannot be re-evaluated (see :func:`champion_reference`)
EXTERNAL_AUC_TAG = "eval.external_pooled.auc"
EVALUATED_SITES_TAG = "eval.evaluated_sites"
MANIFEST_TAG = "eval.data_manifest_sha256"


def _evaluation_tags(evaluation: EvaluationReport | Mapping[str, Any]) -> dict[str, str]:
    """The headline ``eval.*`` tags of a model version; the gates add theirs (:func:`evaluation_tags`)."""
    ev = EvaluationReport.of(evaluation)

    def num(v: float | None) -> str:
        return "" if v is None else f"{float(v):.6g}"

    sites = ev.sites or {}
    return {
        "eval.internal_test.auc": num(ev.internal_test.auc),
        EXTERNAL_AUC_TAG: num(ev.external_pooled.auc),
        **evaluation_tags(ev),
        "eval.threshold": num(ev.threshold.value if ev.threshold is not None else None),
        "eval.site_auc": json.dumps({k: v.auc for k, v in sites.items()})[:4900],
        EVALUATED_SITES_TAG: json.dumps(ev.evaluated_sites or [])[:4900],
        MANIFEST_TAG: (ev.data.manifest_sha256 if ev.data is not None else None) or "",
    }


def _find_evaluation(training_run_id: str) -> EvaluationReport:
    """The newest evaluate-stage run's evaluation.json for a training run (tracking URI already set)."""
    import mlflow

    if not training_run_id:
        raise PromoteStageError("the candidate has no training run id: pass --evaluation PATH")
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=(
            f"tags.`isnetflow.evaluated_run_id` = '{training_run_id}' and tags.`isnetflow.stage` = 'evaluate'"
        ),
        order_by=["start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise PromoteStageError(
            f"no evaluate-stage run found for training run {training_run_id}: run `isnetflow evaluate` "
            "or pass --evaluation PATH"
        )
    run = runs[0]
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=EVALUATION_FILE)
    try:
        evaluation = EvaluationReport.read_from(path)
    except ArtifactError as exc:
        raise PromoteStageError(str(exc)) from exc
    if evaluation.evaluation_run_id is None:
        evaluation.evaluation_run_id = run.info.run_id
    return evaluation


def _fingerprint(validated: str | Path | None) -> str:
    """The data fingerprint of a validated folder; "" when it cannot be read here."""
    from isnetflow.validation.fingerprint import data_fingerprint

    if not validated:
        return ""
    try:
        return data_fingerprint(validated)
    except ValueError as exc:
        log.warning("no data fingerprint: %s", exc)
        return ""


def champion_reference(
    version: str,
    name: str,
    evaluation: EvaluationReport | Mapping[str, Any],
    evaluate_cfg: EvaluateConfig,
    *,
    data: str | Path | None = None,
    masks: str | Path | None = None,
) -> ChampionReference:
    """Pooled external AUC of champion ``version`` on the candidate's evaluation data and sites."""
    from mlflow import MlflowClient

    from isnetflow.evaluation.core import EvaluationError, evaluate_model
    from isnetflow.evaluation.io import EvaluateStageError, held_out_split, load_evaluation_data

    ev = EvaluationReport.of(evaluation)
    ev_data = ev.data or EvaluationData()
    want_hash = ev_data.manifest_sha256
    location = data or ev_data.validated
    validated = Path(location) if location else None
    mask_dir = masks or ev_data.masks
    sites = list(ev.evaluated_sites or [])
    reason = ""
    got = manifest_sha256(validated) if validated is not None else None
    if validated is not None and got is not None:
        if want_hash and got != want_hash:
            reason = f"{validated}/manifest.csv changed since the candidate's evaluation"
        else:
            try:
                loaded = load_classifier(f"models:/{name}/{version}")
                # only the external sites enter the comparison: a champion registered before its held-out
                # list was stored is compared all the same (its internal split recomputed, and unused)
                held = held_out_split(
                    loaded.splits_csv, loaded.facts.splits_sha256, loaded.splits_location, recompute=True
                )
                edata = load_evaluation_data(
                    validated, mask_dir, loaded.facts.train_config(), loaded.facts.classes, held.patients
                )
                cfg = evaluate_cfg.model_copy(update={"threshold": 0.5, "n_boot": 0, "sites": []})
                res = evaluate_model(loaded.module, edata, cfg, sites=sites, audit=False)
                value = finite(EvaluationReport.of(res.payload).external_pooled.auc)
                return ChampionReference(version, value, f"evaluated on {validated}")
            except (ModelLoadError, EvaluateStageError, EvaluationError) as exc:
                reason = f"cannot evaluate the champion: {exc}"
    else:
        reason = f"evaluation data {location or '(not recorded)'}: manifest.csv is not readable here"
    # fall back to the champion's own evaluation when it was made on the very same data and sites
    tags = MlflowClient().get_model_version(name, version).tags
    try:
        recorded_sites = json.loads(tags.get(EVALUATED_SITES_TAG, "null"))
    except json.JSONDecodeError:
        recorded_sites = None
    same = tags.get(MANIFEST_TAG) == want_hash and recorded_sites == sites
    if want_hash and same and tags.get(EXTERNAL_AUC_TAG):
        return ChampionReference(version, float(tags[EXTERNAL_AUC_TAG]), f"recorded ({reason})")
    log.warning("champion v%s cannot be compared: %s", version, reason)
    return ChampionReference(version, None, reason)


def _package_and_register(name: str, candidate: str, loaded: LoadedClassifier, tags: dict[str, str]) -> str:
    """Log the candidate as a pyfunc package (into its training run when that run is in this store)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = loaded.facts.run_id
    exists = False
    if run_id:
        try:
            mlflow.get_run(run_id)
            exists = True
        except MlflowException:
            exists = False
    if exists:
        with mlflow.start_run(run_id=run_id):
            info = log_pyfunc(loaded.module, loaded.facts, splits_csv=loaded.splits_csv)
    else:
        run_tags = {"isnetflow.stage": "package", "isnetflow.candidate_uri": candidate}
        with mlflow.start_run(run_name="package", tags=run_tags):
            info = log_pyfunc(loaded.module, loaded.facts, splits_csv=loaded.splits_csv)
    ensure_registered_model(mlflow.MlflowClient(), name, "ISNet chest X-ray classifier (isnetflow)")
    mv = mlflow.register_model(info.model_uri, name, tags=tags, await_registration_for=120)
    return str(mv.version)


def run(
    policy: PromotionPolicy,
    candidate: str,
    *,
    evaluation: str | Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = EXPERIMENT,
    dry_run: bool = False,
    mask_model_version: str = "",
    data: str | Path | None = None,
    masks: str | Path | None = None,
    evaluate_cfg: EvaluateConfig | None = None,
    train_fallback: TrainConfig | None = None,
    recipe: str = "",
    baseline: str | Path | None = None,
) -> dict[str, Any]:
    """Gate ``candidate`` and (unless ``dry_run``) register it and move aliases; returns the decision.

    ``baseline``: the ``evaluation.json`` (or its folder) of the standard model trained beside the
    candidate in the same run, for the do-no-harm gate (``None``: none was, the gate is not applicable).

    ``recipe``: :func:`isnetflow.stages.retrain.recipe_digest` of the settings the candidate was trained
    with, recorded as ``lineage.recipe_sha256`` (the pipeline passes it; "" when unknown).
    """
    import mlflow

    from isnetflow.evaluation.io import EvaluateStageError, held_out_split, load_evaluation

    use_tracking(tracking_uri, experiment)
    client = mlflow.MlflowClient()
    name = policy.registered_model
    evaluate_cfg = evaluate_cfg or EvaluateConfig()

    existing = _VERSION_URI.match(candidate)
    version: str | None = None
    loaded: LoadedClassifier | None = None
    if existing and existing["name"] == name:
        version = existing["version"]
        try:
            training_run_id = client.get_model_version(name, version).run_id or ""
        except mlflow.exceptions.MlflowException as exc:
            raise PromoteStageError(f"{candidate}: {exc}") from exc
    else:
        try:
            loaded = load_classifier(candidate, fallback=train_fallback)
            # the package carries the held-out patient list: never one that differs from the training's
            held_out_split(
                loaded.splits_csv, loaded.facts.splits_sha256, loaded.splits_location, recompute=True
            )
        except (ModelLoadError, EvaluateStageError) as exc:
            raise PromoteStageError(str(exc)) from exc
        training_run_id = loaded.facts.run_id
    try:
        ev = load_evaluation(evaluation) if evaluation is not None else _find_evaluation(training_run_id)
        standard = None if baseline is None else BaselineReference.from_payload(load_evaluation(baseline))
    except EvaluateStageError as exc:
        raise PromoteStageError(str(exc)) from exc

    def reference(champ: str) -> ChampionReference:
        return champion_reference(champ, name, ev, evaluate_cfg, data=data, masks=masks)

    champion_seen = aliases(client, name).get(CHAMPION)
    ref = reference(champion_seen) if champion_seen is not None and champion_seen != version else None
    gates = evaluate_gates(ev, policy, ref, baseline=standard)
    result: dict[str, Any] = {
        "name": name,
        "candidate": candidate,
        "champion_before": champion_seen,
        "baseline": None if standard is None else asdict(standard),
        "gates": [g.as_dict() for g in gates],
        "all_gates_passed": all_passed(gates),
    }
    if dry_run:
        result |= {"decision": "dry-run", "would_promote": all_passed(gates), "version": version}
        return result

    fingerprint = _fingerprint(data) if data is not None else ""
    tags = {
        **lineage_tags(
            ev,
            training_run_id,
            mask_model_version=mask_model_version,
            candidate_uri=candidate,
            data_fingerprint=fingerprint,
            recipe=recipe,
            standard_model_uri="" if standard is None else standard.model_uri,
        ),
        **_evaluation_tags(ev),
    }
    if version is None:
        assert loaded is not None
        version = _package_and_register(name, candidate, loaded, tags)
    else:
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, v)

    def recheck(new_champion: str) -> list[GateResult]:
        log.info("champion moved to v%s during promotion: re-checking v%s against it", new_champion, version)
        return evaluate_gates(ev, policy, reference(new_champion), baseline=standard)

    try:
        decision = promote_version(
            client,
            name,
            version,
            gates,
            champion_seen=champion_seen,
            recheck=recheck,
            lock_ttl=policy.lock_ttl_seconds,
            lock_wait=policy.lock_wait_seconds,
        )
    except PromotionError as exc:
        raise PromoteStageError(str(exc)) from exc
    return {**result, **decision.as_dict(), "model_uri": f"models:/{name}/{version}"}


def rollback(policy: PromotionPolicy, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """Move ``champion`` back to ``previous-champion`` (see :func:`isnetflow.registry.promotion.rollback`)
    in the store ``tracking_uri`` (None: :func:`~isnetflow.registry.tracking.resolve_tracking_uri`'s)."""
    try:
        with scoped_tracking(tracking_uri) as client:
            return registry_rollback(
                client,
                policy.registered_model,
                lock_ttl=policy.lock_ttl_seconds,
                lock_wait=policy.lock_wait_seconds,
            )
    except PromotionError as exc:
        raise PromoteStageError(str(exc)) from exc


def show(*, tracking_uri: str | None = None, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Registered models, versions, aliases and gate results (see :func:`registry_overview`) in the store
    ``tracking_uri`` (None: :func:`~isnetflow.registry.tracking.resolve_tracking_uri`'s)."""
    try:
        with scoped_tracking(tracking_uri) as client:
            return registry_overview(client, names)
    except PromotionError as exc:
        raise PromoteStageError(str(exc)) from exc
