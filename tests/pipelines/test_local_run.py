"""The pipeline runs end to end with kfp.local on a shrunk config (compiled YAML: test_compiled_pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from isnetflow.config import Settings
from isnetflow.registry.classifier import load_classifier
from isnetflow.registry.promotion import CHAMPION, ensure_registered_model
from isnetflow.reporting import render_run_summary
from isnetflow.stages import ingest
from isnetflow.stages.retrain import FINGERPRINT_TAG, RECIPE_TAG, RETRAIN_EXPERIMENT
from isnetflow.synth import generate_cohort
from isnetflow.validation import read_manifest
from isnetflow_kfp.pipelines.local import LOG_FILE, PipelineFailed, run_local
from tests._configs import FAST_EVALUATE, LENIENT_GATES
from tests._strays import STRAY, STRAY_STATUS, add_stray_files


def _small() -> Settings:
    s = Settings()
    return s.model_copy(
        update={
            "synth": s.synth.model_copy(update={"n": 72, "size": 96}),
            "validate": s.validate.model_copy(update={"image_size": 96, "min_images_per_site": 1}),
            "train": s.train.model_copy(
                update={"model": "cnn-small", "image_size": 48, "batch_size": 8, "epochs": 2,
                        "warmup_epochs": 1, "audit_samples": 8}
            ),
            "evaluate": FAST_EVALUATE,
        }
    )  # fmt: skip


#: gates every candidate passes / none can pass (a 2-epoch model on 72 images), so that each branch of the
#: pipeline after the gates runs for real: the promote component, or the refusal record
LENIENT = LENIENT_GATES
STRICT = {**LENIENT, "min_external_auc_ci_low": 0.999, "max_flip_rate": 0.0}


def test_local_run_end_to_end(tmp_path: Path) -> None:
    """Lenient gates: the promote component runs. The refusal branch runs in
    :func:`test_local_run_on_user_data_with_stray_files_refuses_under_strict_gates` (a run each)."""
    small = _small()
    policy = small.promote.model_copy(update=LENIENT)
    settings = small.model_copy(
        update={
            "train": small.train.model_copy(update={"checkpoint_dir": str(tmp_path / "ckpt")}),
            "promote": policy,
        }
    )
    result = run_local(settings, tmp_path, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")  # a fresh store
    assert result["data"]["valid"] == 72 and result["data"]["validation_passed"]
    # fresh store: no champion, so the retraining data check lets the run train (recorded in MLflow)
    check = result["data_check"]
    assert check["changed"] is True and check["proceed"] is True and check["champion_version"] is None
    assert check["fingerprint"] == result["data"]["fingerprint"]
    assert set(result["models"]) == {"isnet", "standard"}
    for m in result["models"].values():
        assert {"internal_auc", "external_auc", "background_relevance", "gates_passed"} <= set(m)
        assert {"ce_below_half_epoch", "learned_early"} <= set(m)  # when it learned, from its summary
    assert result["promotion"]["decision"] == "promoted"
    assert result["models"]["isnet"]["gates_passed"] is True
    # the do-no-harm gate: the ISNet against this run's standard model (wired through the pipeline), in one
    # line of the summary; the standard model is not compared with itself
    line = result["models"]["isnet"]["standard_comparison"]
    assert "external AUC" in line and "the standard model's" in line and "of this run" in line, line
    assert result["models"]["standard"]["standard_comparison"].endswith("the baseline itself")
    assert result["models"]["isnet"]["gates"]["standard_auc_delta"] is True and line.endswith(": passed")
    assert f"do no harm: {line}" in render_run_summary(result, width=300)
    assert "training CE < 0.5 from epoch" in render_run_summary(result, width=300)
    assert result["wall_seconds"] > 0
    mlflow.set_tracking_uri(result["tracking_uri"])
    # both trainings shared train.checkpoint_dir: each wrote under <dir>/<pipeline run id>/<mode>
    (run_dir,) = (tmp_path / "ckpt").iterdir()
    assert run_dir.name.isdigit()  # kfp.local resolved {{$.pipeline_job_uuid}} to its (numeric) run id
    assert sorted(p.name for p in run_dir.iterdir()) == ["isnet", "standard"]
    for mode, m in result["models"].items():
        run = mlflow.get_run(m["run_id"])
        assert run.data.tags["isnetflow.mode"] == mode
        assert run.data.params["checkpoint_dir"] == str(run_dir / mode)
        assert list((run_dir / mode).glob("step-*.pt"))
    html = next(Path(result["pipeline_root"]).rglob("report"))
    assert "data:image/png;base64," in html.read_text()
    assert json.loads(next(Path(result["pipeline_root"]).rglob("ingest.json")).read_text())["passed"]
    # each model artifact holds its held-out patient list, and each evaluation used it (not a recomputation)
    assert len(list(Path(result["pipeline_root"]).rglob("splits.csv"))) == 2
    evaluations = [json.loads(p.read_text()) for p in Path(result["pipeline_root"]).rglob("evaluation.json")]
    assert len(evaluations) == 2 and not any(e["data"]["split_recomputed"] for e in evaluations)
    # the ISNet candidate's gate outcome is recorded for scheduled retraining (not the baseline's)
    client = MlflowClient(result["tracking_uri"])
    retraining = client.get_experiment_by_name(RETRAIN_EXPERIMENT)
    outcomes = client.search_runs([retraining.experiment_id], "tags.`isnetflow.stage` = 'candidate-outcome'")
    assert len(outcomes) == 1
    outcome = outcomes[0].data.tags
    isnet_passed = result["models"]["isnet"]["gates_passed"]
    assert outcome["retrain.outcome"] == ("passed" if isnet_passed else "refused")
    assert outcome["retrain.data_fingerprint"] == check["fingerprint"] and outcome["retrain.recipe"]
    # so a scheduled run on the same data and settings trains nothing: the ISNet is now either the
    # champion (with the same fingerprint and recipe) or a refused candidate
    again = run_local(
        settings, tmp_path / "again", tracking_uri=result["tracking_uri"], skip_if_unchanged=True
    )
    assert again["data_check"]["decision"] == "skip" and again["models"] == {}
    assert again["data_check"]["recipe"] == outcome["retrain.recipe"]
    # the promote component ran: the ISNet of this run is the champion
    tasks = {p.name for p in Path(result["pipeline_root"]).iterdir() if p.is_dir()}
    assert "promote-model" in tasks
    champion = client.get_model_version_by_alias(policy.registered_model, CHAMPION)
    assert champion.tags[RECIPE_TAG] == outcome["retrain.recipe"]
    assert result["promotion"]["model_uri"].endswith(f"/{champion.version}")  # the decision file's model
    packaged = load_classifier(f"models:/{policy.registered_model}/{champion.version}")
    assert packaged.splits_csv is not None and packaged.facts.splits_sha256
    assert "data unchanged since champion" in again["data_check"]["reason"]


def test_local_run_ends_early_when_the_data_equals_the_champions(tmp_path: Path) -> None:
    s = _small()
    # the synthetic cohort is deterministic: validate it once here to learn the run's data fingerprint
    fingerprint = ingest.run(s, tmp_path / "probe")["data_fingerprint"]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    name = s.promote.registered_model
    ensure_registered_model(client, name)
    mv = client.create_model_version(name, source=f"file://{tmp_path}/m", tags={FINGERPRINT_TAG: fingerprint})
    client.set_registered_model_alias(name, CHAMPION, mv.version)

    result = run_local(s, tmp_path / "work", tracking_uri=uri, skip_if_unchanged=True)
    assert result["data"]["fingerprint"] == fingerprint  # same data, other folder
    check = result["data_check"]
    assert check["changed"] is False and check["proceed"] is False
    assert check["champion_version"] == str(mv.version)
    assert result["models"] == {}
    assert result["promotion"]["decision"] == "skipped"
    assert "data unchanged since champion" in result["promotion"]["reason"]
    tasks = {p.name for p in Path(result["pipeline_root"]).iterdir() if p.is_dir()}
    assert tasks == {"ingest", "data-changed"}  # nothing after the check ran
    assert client.get_run(check["run_id"]).data.tags["retrain.decision"] == "skip"
    assert "no model was trained in this run" in render_run_summary(result)


def test_local_run_on_user_data_with_stray_files_refuses_under_strict_gates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user folder as exports come: DICOMs (real Part-10 files from the synthetic writer) with
    labels.csv and masks/ beside them, plus a DICOMDIR, sidecars, a README, .DS_Store and Thumbs.db.
    The run trains and evaluates; every file is in the manifest: each stray file ignored with its rule,
    labels.csv and the masks beside it ignored as side files; the terminal gets nothing but the progress
    events, the kfp log goes to the run folder. Under gates no candidate can pass, the pipeline's refusal
    branch runs: nothing is promoted, the refused candidate is recorded for scheduled retraining, and a
    scheduled run on the same data trains nothing."""
    small = _small()
    s = small.model_copy(update={"promote": small.promote.model_copy(update=STRICT)})
    export = tmp_path / "export"
    info = generate_cohort(s.synth, export, progress=False)
    strays = [f"dicom/{p}" for p in add_stray_files(export / "dicom")] + ["cohort.json", "truth.csv"]
    events: list[tuple[str, float | None, bool]] = []
    capsys.readouterr()
    result = run_local(
        s,
        tmp_path / "work",
        input_uri=str(export),
        external_sites=info["external_sites"],
        verbose=False,
        progress=lambda label, seconds, ok: events.append((label, seconds, ok)),
    )
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""  # kfp's ~900 lines went to the log
    n_masks = len(list((export / "masks").iterdir()))
    assert result["data"]["valid"] == 72 and result["data"]["validation_passed"]
    assert result["data"]["quarantined"] == 0
    assert result["data"]["ignored"] == len(strays) + 1 + n_masks  # + labels.csv and masks/*.png
    assert set(result["models"]) == {"isnet", "standard"}
    for m in result["models"].values():
        assert m["internal_auc"] is not None and m["external_auc"] is not None

    run_dir = Path(result["pipeline_root"])
    manifest = read_manifest(next(run_dir.rglob("manifest.csv"))).set_index("path")
    for rel in strays:
        row = manifest.loc[rel]
        assert row["status"] == STRAY_STATUS and row["reason"], rel
        assert row["reason_code"] == STRAY.get(Path(rel).name, "not_dicom"), (rel, row["reason"])
    assert manifest.loc["labels.csv", "reason_code"] == "labels_file"
    side = manifest[manifest.index.str.startswith("masks/")]
    assert len(side) == n_masks and (side["reason_code"] == "provided_mask").all()
    assert set(manifest.index) == {p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()}
    assert (manifest["status"] == "valid").sum() == 72

    ends = [(label, ok) for label, seconds, ok in events if seconds is not None]
    assert ends == [(label, True) for label, _ in ends]
    assert {label for label, _ in ends} == {
        "ingest + validate", "data changed?", "lung masks", "train ISNet", "train standard",
        "evaluate ISNet", "evaluate standard",
    }  # fmt: skip
    assert result["log"] == str(run_dir / LOG_FILE)
    log = (run_dir / LOG_FILE).read_text()
    assert "Executing task" in log and "finished with status" in log

    # the refusal branch: no promote component, the ISNet candidate's refusal recorded, then skipped
    assert result["promotion"]["decision"] == "rejected"
    assert result["models"]["isnet"]["gates_passed"] is False
    assert "promote-model" not in {p.name for p in run_dir.iterdir() if p.is_dir()}
    client = MlflowClient(result["tracking_uri"])
    retraining = client.get_experiment_by_name(RETRAIN_EXPERIMENT)
    stage = "tags.`isnetflow.stage` = 'candidate-outcome'"
    (outcome,) = client.search_runs([retraining.experiment_id], stage)
    assert outcome.data.tags["retrain.outcome"] == "refused"
    assert outcome.data.tags["retrain.data_fingerprint"] == result["data_check"]["fingerprint"]
    again = run_local(
        s, tmp_path / "again", input_uri=str(export), external_sites=info["external_sites"],
        tracking_uri=result["tracking_uri"], skip_if_unchanged=True, verbose=False,
    )  # fmt: skip
    assert again["data_check"]["decision"] == "skip" and again["models"] == {}
    assert again["data_check"]["refused_before"]["run_id"] == outcome.info.run_id


def test_a_failed_task_names_the_task_the_error_and_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    with pytest.raises(PipelineFailed) as info:
        run_local(_small(), tmp_path, input_uri=str(tmp_path / "missing"), verbose=False)
    failed = info.value
    assert failed.task == "ingest + validate"
    assert failed.error == f"{tmp_path / 'missing' / 'labels.csv'}: cannot read labels file (not found)"
    assert failed.log is not None and failed.log.is_file() and "Traceback" in failed.log.read_text()
    assert capsys.readouterr().out == ""
