"""The retraining data check against a local SQLite registry with a champion carrying its fingerprint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from isnetflow.registry.promotion import CHAMPION, ensure_registered_model
from isnetflow.stages.retrain import FINGERPRINT_TAG, RETRAIN_EXPERIMENT, check_data_changed
from isnetflow.stages.validate import MANIFEST_COLUMNS
from isnetflow.validation import data_fingerprint


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the module (creating its schema takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('retrain')}/mlflow.db"


def _validated(folder: Path, *, root: str, label0: str = "covid") -> Path:
    rows = []
    for i, (label, site, role) in enumerate(
        [(label0, "Alder", "internal"), ("normal", "Alder", "internal"), ("covid", "Lakeshore", "external")]
    ):
        rec: dict[str, object] = dict.fromkeys(MANIFEST_COLUMNS)
        rec.update(
            path=f"{site}/p{i}/{i}.dcm",
            uri=f"{root}/{site}/p{i}/{i}.dcm",
            status="valid",
            label=label,
            patient_id=f"p{i}",
            site=site,
            role=role,
            sha256=f"{i:064x}",
        )
        rows.append(rec)
    folder.mkdir(parents=True)
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(folder / "manifest.csv", index=False)
    return folder


def _champion(store: str, name: str, tags: dict[str, str], tmp_path: Path) -> str:
    client = MlflowClient(store)
    ensure_registered_model(client, name)
    older = {FINGERPRINT_TAG: "v1:" + "0" * 64}
    client.create_model_version(name, source=f"file://{tmp_path}/old", tags=older)
    mv = client.create_model_version(name, source=f"file://{tmp_path}/model", tags=tags)
    client.set_registered_model_alias(name, CHAMPION, mv.version)
    return str(mv.version)


def _recorded(store: str, run_id: str) -> dict[str, str]:
    run = MlflowClient(store).get_run(run_id)
    assert MlflowClient(store).get_experiment(run.info.experiment_id).name == RETRAIN_EXPERIMENT
    return {k: v for k, v in run.data.tags.items() if k.startswith(("retrain.", "isnetflow."))}


def test_unchanged_data_skips_and_is_recorded(store: str, tmp_path: Path) -> None:
    trained_on = _validated(tmp_path / "run1" / "validated", root="/mnt/run-1/cohort")
    version = _champion(store, "cxr-unchanged", {FINGERPRINT_TAG: data_fingerprint(trained_on)}, tmp_path)
    # the same data, written by a later run under another artifact folder
    now = _validated(tmp_path / "run2" / "validated", root="/mnt/run-2/cohort")
    result = check_data_changed(now, store, "cxr-unchanged")
    assert result["changed"] is False and result["proceed"] is False and result["decision"] == "skip"
    assert result["champion_version"] == version
    assert result["fingerprint"] == result["champion_fingerprint"] == data_fingerprint(trained_on)
    assert result["reason"] == f"data unchanged since champion v{version}"
    tags = _recorded(store, result["run_id"])
    assert tags["isnetflow.stage"] == "data-check"
    assert tags["retrain.decision"] == "skip" and tags["retrain.data_changed"] == "false"
    assert tags["retrain.data_fingerprint"] == result["fingerprint"]
    assert tags["retrain.champion_version"] == version
    assert tags["retrain.registered_model"] == "cxr-unchanged"
    # skip_if_unchanged off: same comparison, but the pipeline trains
    forced = check_data_changed(now, store, "cxr-unchanged", skip_if_unchanged=False)
    assert forced["changed"] is False and forced["proceed"] is True and forced["decision"] == "train"
    assert "training anyway" in forced["reason"]
    assert _recorded(store, forced["run_id"])["retrain.skip_if_unchanged"] == "false"


def test_changed_label_trains(store: str, tmp_path: Path) -> None:
    trained_on = _validated(tmp_path / "old" / "validated", root="/data")
    version = _champion(store, "cxr-changed", {FINGERPRINT_TAG: data_fingerprint(trained_on)}, tmp_path)
    relabelled = _validated(tmp_path / "new" / "validated", root="/data", label0="normal")
    result = check_data_changed(relabelled, store, "cxr-changed")
    assert result["changed"] is True and result["proceed"] is True and result["decision"] == "train"
    assert result["champion_fingerprint"] == data_fingerprint(trained_on) != result["fingerprint"]
    assert result["reason"] == f"data changed since champion v{version}"
    tags = _recorded(store, result["run_id"])
    assert tags["retrain.decision"] == "train" and tags["retrain.data_changed"] == "true"


def test_no_champion_or_no_fingerprint_trains(store: str, tmp_path: Path) -> None:
    data = _validated(tmp_path / "validated", root="/data")
    result = check_data_changed(data, store, "cxr-never-registered")
    assert result["changed"] is True and result["proceed"] is True
    assert result["champion_version"] is None and result["champion_fingerprint"] is None
    assert result["reason"] == "no champion of cxr-never-registered yet"
    # a registered model whose versions have no champion alias
    client = MlflowClient(store)
    ensure_registered_model(client, "cxr-no-alias")
    client.create_model_version("cxr-no-alias", source=f"file://{tmp_path}/m")
    assert check_data_changed(data, store, "cxr-no-alias")["reason"] == "no champion of cxr-no-alias yet"
    # a champion registered before fingerprints existed
    version = _champion(store, "cxr-old-champion", {"lineage.data_manifest_sha256": "f" * 64}, tmp_path)
    old = check_data_changed(data, store, "cxr-old-champion")
    assert old["changed"] is True and old["champion_version"] == version
    assert old["reason"] == f"champion v{version} has no {FINGERPRINT_TAG} tag"
    assert _recorded(store, old["run_id"])["retrain.champion_fingerprint"] == ""


def test_promotion_lineage_carries_the_fingerprint(tmp_path: Path) -> None:
    from isnetflow.stages.promote import _fingerprint, lineage_tags

    data = _validated(tmp_path / "validated", root="/data")
    evaluation = {"data": {"manifest_sha256": "f" * 64, "data_fingerprint": "v1:recorded"}}
    assert lineage_tags(evaluation, "run-1")[FINGERPRINT_TAG] == "v1:recorded"
    here = _fingerprint(data)  # the promote task's own copy of the data wins over the recorded value
    assert lineage_tags(evaluation, "run-1", data_fingerprint=here)[FINGERPRINT_TAG] == data_fingerprint(data)
    assert _fingerprint(tmp_path / "missing") == "" and _fingerprint(None) == ""
    assert lineage_tags({"data": {}}, "run-1")[FINGERPRINT_TAG] == ""


def test_recipe_digest_covers_the_model_not_the_runtime() -> None:
    from isnetflow.config import Settings
    from isnetflow.stages.retrain import recipe_digest

    base = Settings()
    digest = recipe_digest(base, code_version="abc")
    assert digest.startswith("v1:") and len(digest) == 3 + 64
    assert recipe_digest(Settings(), code_version="abc") == digest  # deterministic
    knobs = base.model_copy(
        update={
            "validate": base.validate.model_copy(update={"workers": 7}),
            "train": base.train.model_copy(update={"num_threads": 3, "device": "cpu"}),
            "synth": base.synth.model_copy(update={"n": 17}),
        }
    )
    assert recipe_digest(knobs, code_version="abc") == digest
    for changed in (
        base.model_copy(update={"train": base.train.model_copy(update={"lr": base.train.lr * 2})}),
        base.model_copy(update={"validate": base.validate.model_copy(update={"image_size": 128})}),
        base.model_copy(
            update={"promote": base.promote.model_copy(update={"registered_model": "another-name"})}
        ),
    ):
        assert recipe_digest(changed, code_version="abc") != digest
    assert recipe_digest(base, code_version="def") != digest  # new code retrains once


def test_changed_recipe_on_unchanged_data_trains(store: str, tmp_path: Path) -> None:
    from isnetflow.stages.retrain import RECIPE_TAG

    data = _validated(tmp_path / "validated", root="/data")
    tags = {FINGERPRINT_TAG: data_fingerprint(data), RECIPE_TAG: "v1:" + "a" * 64}
    version = _champion(store, "cxr-recipe", tags, tmp_path)
    same = check_data_changed(data, store, "cxr-recipe", recipe="v1:" + "a" * 64)
    assert same["decision"] == "skip" and same["champion_recipe"] == "v1:" + "a" * 64
    new = check_data_changed(data, store, "cxr-recipe", recipe="v1:" + "b" * 64)
    assert new["changed"] is True and new["decision"] == "train"
    assert new["reason"] == f"data unchanged but the recipe changed since champion v{version}"
    recorded = _recorded(store, new["run_id"])
    assert recorded["retrain.recipe"] == "v1:" + "b" * 64
    assert recorded["retrain.champion_recipe"] == "v1:" + "a" * 64
    # a champion registered before recipes were recorded: compared on the data alone
    old = _champion(store, "cxr-recipe-old", {FINGERPRINT_TAG: data_fingerprint(data)}, tmp_path)
    legacy = check_data_changed(data, store, "cxr-recipe-old", recipe="v1:" + "b" * 64)
    assert legacy["decision"] == "skip" and legacy["reason"] == f"data unchanged since champion v{old}"


def test_refused_candidate_is_not_retrained_on_the_same_data_and_recipe(store: str, tmp_path: Path) -> None:
    from isnetflow.stages.retrain import record_candidate_outcome

    name, recipe = "cxr-refused", "v1:" + "c" * 64
    data = _validated(tmp_path / "validated", root="/data")
    first = check_data_changed(data, store, name, recipe=recipe)
    assert first["decision"] == "train" and first["refused_before"] is None  # no champion, nothing refused
    run_id = record_candidate_outcome(
        data,
        store,
        name,
        recipe=recipe,
        all_gates_passed=False,
        failed_gates=["flip_rate", "background_share"],
        candidate_uri="runs:/abc/model",
    )
    again = check_data_changed(data, store, name, recipe=recipe)
    assert again["decision"] == "skip" and again["proceed"] is False and again["changed"] is True
    assert again["refused_before"] == {
        "run_id": run_id,
        "failed_gates": "flip_rate, background_share",
        "candidate_uri": "runs:/abc/model",
    }
    assert "already refused (failed: flip_rate, background_share" in again["reason"]
    assert _recorded(store, again["run_id"])["retrain.refused_before"] == run_id
    outcome = _recorded(store, run_id)
    assert outcome["isnetflow.stage"] == "candidate-outcome" and outcome["retrain.outcome"] == "refused"
    # anything new trains: a new recipe, new data, or skip_if_unchanged off
    assert check_data_changed(data, store, name, recipe="v1:" + "d" * 64)["decision"] == "train"
    relabelled = _validated(tmp_path / "relabelled", root="/data", label0="normal")
    assert check_data_changed(relabelled, store, name, recipe=recipe)["decision"] == "train"
    forced = check_data_changed(data, store, name, recipe=recipe, skip_if_unchanged=False)
    assert forced["decision"] == "train" and forced["refused_before"] is None
    # other models' refusals and passed candidates block nothing
    assert check_data_changed(data, store, "cxr-other", recipe=recipe)["decision"] == "train"
    record_candidate_outcome(data, store, "cxr-passed", recipe=recipe, all_gates_passed=True)
    assert check_data_changed(data, store, "cxr-passed", recipe=recipe)["decision"] == "train"
