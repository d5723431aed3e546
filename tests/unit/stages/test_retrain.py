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
