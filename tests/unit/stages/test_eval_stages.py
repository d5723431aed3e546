"""The evaluate and promote stages end to end on a tiny cohort with a local SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.evaluation.gates import GATE_NAMES
from isnetflow.lrp import relevance
from isnetflow.registry.classifier import load_classifier
from isnetflow.registry.promotion import aliases
from isnetflow.stages import evaluate, promote
from isnetflow.validation import data_fingerprint
from tests._configs import FAST_EVALUATE, lenient_policy, strict_policy

FAST = FAST_EVALUATE
LENIENT = lenient_policy(registered_model="cxr-unit")
STRICT = strict_policy(registered_model="cxr-unit")


@pytest.fixture(scope="module")
def evaluated(eval_trained: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("evaluation")
    payload = evaluate.run(
        FAST,
        eval_trained.summary["model_uri"],
        eval_trained.validated,
        eval_trained.masks,
        out,
        tracking_uri=eval_trained.tracking_uri,
        progress=False,
    )
    return out, payload


def test_evaluate_stage_outputs_and_tracking(eval_trained: Any, evaluated: tuple[Path, dict]) -> None:
    out, payload = evaluated
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["model"]["run_id"] == eval_trained.summary["run_id"]
    assert ev["data"]["split_source"] == "run" and ev["data"]["val_fraction"] == 0.3
    # the split is the training run's stored list, found as the run's artifact, digest verified
    assert ev["data"]["split_recomputed"] is False
    assert ev["data"]["splits_sha256"] == eval_trained.summary["splits_sha256"]
    assert ev["data"]["splits_file"] == f"runs:/{eval_trained.summary['run_id']}/splits.csv"
    assert ev["splits"]["external_pooled"]["n"] == eval_trained.summary["splits"]["external"]
    assert ev["splits"]["internal_test"]["n"] == eval_trained.summary["splits"]["test"]
    assert set(ev["sites"]) == {
        "St Aurelia General Hospital",
        "Northfield University Hospital",
        "Riverside Community Hospital",
        "Lakeshore Regional Medical Center",
        "Mount Verity Clinic",
        "Harbor Point Hospital",
    }
    for key in ("pooled", "per_site"):
        assert key in ev["audit"]["background_share"]
    for key in ("flip_rate", "mean_abs_score_change"):
        assert ev["audit"]["counterfactual"][key] is not None
    for fig in ("roc", "reliability", "heatmaps", "counterfactual"):
        assert (out / ev["figures"][fig]).stat().st_size > 5000
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "src='figures/" not in html
    preds = pd.read_csv(out / "predictions.csv")
    assert set(preds["split"]) == {"val", "test", "external"} and preds["score"].between(0, 1).all()

    assert "the training run's held-out patient list runs:/" in html and "Split recomputed" not in html

    mlflow.set_tracking_uri(eval_trained.tracking_uri)
    run = mlflow.get_run(payload["evaluation_run_id"])
    assert run.data.tags["isnetflow.evaluated_run_id"] == eval_trained.summary["run_id"]
    assert run.data.tags["isnetflow.split_recomputed"] == "false"
    train_run = mlflow.get_run(eval_trained.summary["run_id"])
    assert train_run.data.params["data.splits_sha256"] == eval_trained.summary["splits_sha256"]
    assert "splits.csv" in {a.path for a in mlflow.MlflowClient().list_artifacts(train_run.info.run_id)}
    assert "splits.external_pooled.auc" in run.data.metrics
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "figures")}
    assert names == {f"figures/{f}.png" for f in ("roc", "reliability", "heatmaps", "counterfactual")}


def test_evaluate_local_model_uses_split_fallback(
    eval_trained: Any, evaluated: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # A model.pt from before splits.csv: its train_summary.json names no held-out list and (older still)
    # lacks the split parameters.
    local = str(tmp_path / "bare" / "model.pt")
    (tmp_path / "bare").mkdir()
    shutil.copy(eval_trained.summary["local_model"], local)
    old = ("val_fraction", "test_fraction", "seed", "splits_file", "splits_sha256")
    summary = {k: v for k, v in eval_trained.summary.items() if k not in old}
    (tmp_path / "bare" / "train_summary.json").write_text(json.dumps(summary))
    with pytest.raises(evaluate.EvaluateStageError, match="no split parameters"):
        evaluate.run(FAST, local, eval_trained.validated, eval_trained.masks, tmp_path / "x", audit=False)
    # no stored list: refused unless the split may be recomputed, in one line naming the file
    with pytest.raises(
        evaluate.EvaluateStageError, match=r"bare/splits\.csv: the model has no stored held-out patient list"
    ) as err:
        evaluate.run(
            FAST, local, eval_trained.validated, eval_trained.masks, tmp_path / "x",
            train_fallback=eval_trained.train_cfg, audit=False,
        )  # fmt: skip
    assert "\n" not in str(err.value) and "recompute_split" in str(err.value)
    payload = evaluate.run(
        FAST.model_copy(update={"recompute_split": True}),
        local,
        eval_trained.validated,
        eval_trained.masks,
        tmp_path / "local",
        train_fallback=eval_trained.train_cfg,
        audit=False,
        progress=False,
    )
    assert payload["data"]["split_source"] == "config" and "evaluation_run_id" not in payload
    assert payload["data"]["split_recomputed"] is True and payload["data"]["splits_sha256"] is None
    assert payload["splits"]["internal_test"]["n"] == eval_trained.summary["splits"]["test"]
    assert "audit" not in payload
    ev = json.loads((tmp_path / "local" / "evaluation.json").read_text())
    assert ev["data"]["split_recomputed"] is True
    html = (tmp_path / "local" / "report.html").read_text()
    assert "Split recomputed" in html and "RECOMPUTED (the model has no stored splits.csv)" in html
    # the recomputed split is the stored one: same images in the same splits, same numbers
    stored_out, stored = evaluated
    recomputed = pd.read_csv(tmp_path / "local" / "predictions.csv")
    pd.testing.assert_frame_equal(recomputed, pd.read_csv(stored_out / "predictions.csv"))
    assert payload["splits"]["internal_test"] == stored["splits"]["internal_test"]
    assert payload["data"]["splits"] == stored["data"]["splits"]


def test_evaluate_refuses_a_changed_or_missing_splits_csv(eval_trained: Any, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "model"
    folder.mkdir()
    trained = Path(eval_trained.summary["local_model"]).parent
    for name in ("model.pt", "train_summary.json", "splits.csv"):
        shutil.copy(trained / name, folder / name)
    lines = (folder / "splits.csv").read_text().splitlines()
    held = next(i for i, line in enumerate(lines) if line.endswith(",test"))
    lines[held] = lines[held].removesuffix(",test") + ",train"  # a held-out patient moved into training
    (folder / "splits.csv").write_text("\n".join(lines) + "\n")
    args = (eval_trained.validated, eval_trained.masks, tmp_path / "o")
    flagged = FAST.model_copy(update={"recompute_split": True})  # the flag never overrides a recorded list
    with pytest.raises(
        evaluate.EvaluateStageError, match=rf"{folder}/splits\.csv: SHA-256 .* does not match"
    ):
        evaluate.run(flagged, str(folder), *args, audit=False)
    (folder / "splits.csv").unlink()
    with pytest.raises(
        evaluate.EvaluateStageError, match=rf"{folder}/splits\.csv: not found, but the training"
    ):
        evaluate.run(flagged, str(folder), *args, audit=False)


def test_evaluate_errors_name_the_problem(eval_trained: Any, tmp_path: Path) -> None:
    with pytest.raises(evaluate.EvaluateStageError, match=r"manifest\.csv: not found"):
        evaluate.run(FAST, "model.pt", tmp_path, None, tmp_path / "o")
    with pytest.raises(evaluate.EvaluateStageError, match=r"nope\.pt: model file not found"):
        evaluate.run(FAST, str(tmp_path / "nope.pt"), eval_trained.validated, None, tmp_path / "o")
    with pytest.raises(evaluate.EvaluateStageError, match="Atlantis"):
        evaluate.run(
            FAST,
            eval_trained.summary["model_uri"],
            eval_trained.validated,
            eval_trained.masks,
            tmp_path / "o",
            sites=["Atlantis"],
            tracking_uri=eval_trained.tracking_uri,
        )


def test_evaluate_cli(eval_trained: Any, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            eval_trained.summary["model_uri"],
            "--data",
            str(eval_trained.validated),
            "--masks",
            str(eval_trained.masks),
            "--out",
            str(tmp_path / "cli"),
            "--sites",
            "Mount Verity Clinic",
            "--n-boot",
            "20",
            "--no-audit",
            "--recompute-split",
            "--tracking-uri",
            eval_trained.tracking_uri,
        ],
    )
    assert result.exit_code == 0, result.output
    ev = json.loads((tmp_path / "cli" / "evaluation.json").read_text())
    assert list(ev["sites"]) == ["Mount Verity Clinic"] and ev["config"]["n_boot"] == 20
    # --recompute-split only applies to a model without a stored list: this one has its splits.csv
    assert ev["config"]["recompute_split"] is True and ev["data"]["split_recomputed"] is False


def test_promote_register_gate_rollback_sqlite(
    eval_trained: Any, evaluated: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = evaluated
    uri = eval_trained.tracking_uri
    candidate = eval_trained.summary["model_uri"]
    monkeypatch.setenv("ISNETFLOW_IMAGE", "registry.example/isnetflow:test")

    dry = promote.run(LENIENT, candidate, tracking_uri=uri, dry_run=True, evaluation=out)
    assert dry["decision"] == "dry-run" and dry["would_promote"] and dry["version"] is None
    client = mlflow.MlflowClient(uri)
    assert not [m for m in client.search_registered_models() if m.name == "cxr-unit"]
    # without --evaluation, the newest evaluate-stage run of the candidate's training run is used
    newest = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`isnetflow.evaluated_run_id` = '{eval_trained.summary['run_id']}'",
        order_by=["start_time DESC"],
        output_format="list",
    )[0]
    found = promote._find_evaluation(eval_trained.summary["run_id"])
    assert found.evaluation_run_id == newest.info.run_id
    with pytest.raises(promote.PromoteStageError, match="no evaluate-stage run found"):
        promote._find_evaluation("0" * 32)

    first = promote.run(
        LENIENT, candidate, tracking_uri=uri, evaluation=out, mask_model_version="lung-segmenter/3"
    )
    assert first["promoted"] and first["version"] == "1"
    mv = client.get_model_version("cxr-unit", "1")
    assert mv.tags["lineage.training_run_id"] == eval_trained.summary["run_id"]
    assert mv.tags["lineage.container_image"] == "registry.example/isnetflow:test"
    assert mv.tags["lineage.lung_mask_model_version"] == "lung-segmenter/3"
    assert len(mv.tags["lineage.data_manifest_sha256"]) == 64 and mv.tags["lineage.code_version"]
    # what scheduled retraining compares (recorded by evaluate, carried into the version's lineage)
    assert mv.tags["lineage.data_fingerprint"] == data_fingerprint(eval_trained.validated)
    assert json.loads(mv.tags["lineage.validation_summary"])["passed"] is True
    assert mv.tags["gate.champion_auc_delta.passed"] == "true"
    # the registered package carries the training run's held-out patient list
    packaged = load_classifier("models:/cxr-unit/1")
    stored = (Path(eval_trained.summary["local_model"]).parent / "splits.csv").read_bytes()
    assert (
        packaged.splits_csv == stored
        and packaged.facts.splits_sha256 == eval_trained.summary["splits_sha256"]
    )

    model = mlflow.pyfunc.load_model("models:/cxr-unit@champion")
    for n in (1, 4):
        proba = model.predict(np.random.default_rng(n).random((n, 1, 48, 48), dtype=np.float32))
        assert list(proba.columns) == ["normal", "covid"] and len(proba) == n
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    module = model.unwrap_python_model().module
    x = torch.rand(2, 1, 48, 48)
    assert relevance(module, x, torch.tensor([0, 1])).shape == x.shape

    rejected = promote.run(STRICT, candidate, tracking_uri=uri, evaluation=out)
    assert not rejected["promoted"] and rejected["version"] == "2"
    failed = {g["name"] for g in rejected["gates"] if not g["passed"]}
    assert failed == {"external_auc_ci_low", "background_share"}
    tags = client.get_model_version("cxr-unit", "2").tags
    assert tags["gate.background_share.passed"] == "false" and tags["gate.background_share.threshold"] == "0"
    assert tags["promotion.decision"] == "rejected"
    assert aliases(client, "cxr-unit") == {"champion": "1", "challenger": "2"}

    second = promote.run(LENIENT, "models:/cxr-unit/2", tracking_uri=uri, evaluation=out)
    assert second["promoted"] and second["previous_champion"] == "1"
    delta = next(g for g in second["gates"] if g["name"] == "champion_auc_delta")
    assert delta["value"] == pytest.approx(0.0) and "evaluated on" in delta["detail"]  # same model, same data
    assert aliases(client, "cxr-unit") == {"champion": "2", "previous-champion": "1"}

    back = CliRunner().invoke(app, ["promote", "--rollback", "--name", "cxr-unit", "--tracking-uri", uri])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout)["champion"] == "1"
    shown = CliRunner().invoke(
        app, ["registry", "show", "--json", "--tracking-uri", uri, "--name", "cxr-unit"]
    )
    assert shown.exit_code == 0, shown.output
    (model_info,) = json.loads(shown.stdout)
    assert model_info["aliases"] == {"champion": "1"} and model_info["champion_stack"] == ["1"]
    assert [h["action"] for h in model_info["history"]] == ["promote", "promote", "rollback"]
    v2 = model_info["versions"][1]  # re-gated under LENIENT: the newest decision is what the tags hold
    assert v2["decision"] == "promoted" and v2["gates"]["background_share"]["passed"] == "true"
    assert set(v2["gates"]) == set(GATE_NAMES) and v2["lineage"]["training_run_id"]
    again = CliRunner().invoke(app, ["promote", "--rollback", "--name", "cxr-unit", "--tracking-uri", uri])
    assert again.exit_code == 2 and "no previous champion" in again.output

    # champion reference when the evaluation data cannot be read here: the champion's recorded metrics
    # count only if they were computed on the very same manifest and sites
    ev = json.loads((out / "evaluation.json").read_text())
    moved = {**ev, "data": {**ev["data"], "validated": "/nonexistent/validated"}}
    ref = promote.champion_reference("1", "cxr-unit", moved, FAST)
    assert ref.source.startswith("recorded") and ref.external_auc == pytest.approx(
        ev["splits"]["external_pooled"]["auc"], abs=1e-5
    )
    other = {**moved, "data": {**moved["data"], "manifest_sha256": "0" * 64}}
    ref = promote.champion_reference("1", "cxr-unit", other, FAST)
    assert ref.external_auc is None and "not readable" in ref.source


def test_promote_compares_with_the_standard_model_of_the_same_run(
    eval_trained: Any, evaluated: tuple[Path, dict], tmp_path: Path
) -> None:
    """``baseline``: the standard model's evaluation of the same run feeds the do-no-harm gate; the
    registry records its outcome and which standard model it was (without one: not applicable)."""
    out, payload = evaluated
    uri = eval_trained.tracking_uri
    candidate = eval_trained.summary["model_uri"]
    policy = lenient_policy(registered_model="cxr-unit-dnh", max_auc_drop_vs_standard=0.05)
    standard = json.loads(json.dumps(payload))
    standard["model"] |= {"uri": "runs:/standard-run/model", "run_id": "standard-run"}
    standard["splits"]["external_pooled"]["auc"] = payload["splits"]["external_pooled"]["auc"] + 0.06
    (tmp_path / "evaluation.json").write_text(json.dumps(standard))

    alone = promote.run(policy, candidate, tracking_uri=uri, dry_run=True, evaluation=out)
    gate = next(g for g in alone["gates"] if g["name"] == "standard_auc_delta")
    assert gate["passed"] and gate["detail"].startswith("not applicable") and alone["baseline"] is None

    with pytest.raises(promote.PromoteStageError, match="cannot read the evaluation"):
        promote.run(
            policy, candidate, tracking_uri=uri, dry_run=True, evaluation=out, baseline=tmp_path / "no"
        )
    refused = promote.run(policy, candidate, tracking_uri=uri, evaluation=out, baseline=tmp_path)
    assert not refused["promoted"] and refused["baseline"]["model_uri"] == "runs:/standard-run/model"
    assert [g["name"] for g in refused["gates"] if not g["passed"]] == ["standard_auc_delta"]
    tags = mlflow.MlflowClient(uri).get_model_version("cxr-unit-dnh", refused["version"]).tags
    assert tags["gate.standard_auc_delta.passed"] == "false"
    assert tags["gate.standard_auc_delta.threshold"] == "-0.05"
    assert float(tags["gate.standard_auc_delta.value"]) == pytest.approx(-0.06)
    assert tags["gate.standard_auc_delta.detail"].endswith("of this run (allowed drop 0.050): refused")
    assert tags["lineage.standard_model_uri"] == "runs:/standard-run/model"
    assert tags["promotion.decision"] == "rejected"

    # the same through the CLI: --baseline-evaluation
    import yaml
    from typer.testing import CliRunner

    from isnetflow.cli import app

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy.model_dump(mode="json")))
    args = ["promote", "--candidate", candidate, "--policy", str(policy_file), "--evaluation", str(out),
            "--tracking-uri", uri, "--dry-run"]  # fmt: skip
    cli = CliRunner().invoke(app, [*args, "--baseline-evaluation", str(tmp_path)])
    assert cli.exit_code == 1, cli.output
    assert "FAIL standard_auc_delta" in cli.output and "runs:/standard-run/model" in cli.output
    assert CliRunner().invoke(app, args).exit_code == 0  # without it the gate is not applicable
