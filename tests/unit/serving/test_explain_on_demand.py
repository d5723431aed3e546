"""Explanations on demand and dataset lineage: the pyfunc ``explain`` parameter, ``isnetflow explain``,
normalization stored with the model, quarantine reasons equal to the validate stage's, and the manifest
recorded with ``mlflow.log_input`` by the train and evaluate stages (tiny model of ``eval_trained``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.config import EvaluateConfig, ValidateConfig
from isnetflow.lrp import relevance
from isnetflow.registry.classifier import load_classifier, log_pyfunc
from isnetflow.registry.lineage import DIGEST_CHARS, normalization_of_run
from isnetflow.serving.explain import ExplainError, InputError, prepare_file
from isnetflow.serving.model import EXPLAIN_PARAM, HEATMAP, LoadedClassifier
from isnetflow.validation.manifest import manifest_sha256, read_manifest
from tests._configs import Trained


@pytest.fixture(scope="module")
def store(eval_trained: Trained) -> Iterator[str]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(eval_trained.tracking_uri)
    try:
        yield eval_trained.tracking_uri
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.fixture(scope="module")
def loaded(eval_trained: Trained, store: str) -> LoadedClassifier:
    return load_classifier(eval_trained.summary["model_uri"])


@pytest.fixture(scope="module")
def packaged(loaded: LoadedClassifier, store: str) -> str:
    """The tiny model as the registry holds it: the pyfunc package, logged once."""
    mlflow.set_experiment("explain-tests")
    with mlflow.start_run():
        return str(log_pyfunc(loaded.module, loaded.facts).model_uri)


def _cli(store: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["explain", "--tracking-uri", store, *args])
    return result.exit_code, result.stdout, result.stderr


def _dicoms(trained: Trained) -> list[Path]:
    df = read_manifest(trained.validated, valid_only=True).sort_values("path")
    return [Path(u) for u in df["uri"]]


# -- lineage -------------------------------------------------------------------------------------------


def test_training_and_evaluation_runs_record_the_manifest_as_an_mlflow_dataset(
    eval_trained: Trained, store: str, tmp_path: Path
) -> None:
    from isnetflow.stages import evaluate

    client = mlflow.MlflowClient()
    sha = manifest_sha256(eval_trained.validated)
    assert sha
    train_run = client.get_run(eval_trained.summary["run_id"])
    payload = evaluate.run(
        EvaluateConfig(n_boot=0, audit_per_site=0, counterfactual_max=0, gallery_per_group=0),
        eval_trained.summary["model_uri"],
        eval_trained.validated,
        eval_trained.masks,
        tmp_path / "eval",
        tracking_uri=store,
        audit=False,
        progress=False,
    )
    eval_run = client.get_run(payload["evaluation_run_id"])
    for run, context in ((train_run, "training"), (eval_run, "evaluation")):
        (item,) = run.inputs.dataset_inputs
        assert {t.key: t.value for t in item.tags} == {"mlflow.data.context": context}
        ds = item.dataset
        assert ds.name == "manifest" and ds.digest == sha[:DIGEST_CHARS]
        assert ds.source_type == "local"
        assert json.loads(ds.source)["uri"] == str((eval_trained.validated / "manifest.csv").resolve())
        profile = json.loads(ds.profile)
        assert profile["manifest_sha256"] == sha and profile["num_rows"] == 48
        assert "sop_instance_uid" in ds.schema
        assert run.data.tags["data.manifest_sha256"] == sha  # the existing lineage tag stays
    recorded = json.loads((eval_trained.validated / "validation.json").read_text())["config"]
    assert normalization_of_run(train_run.info.run_id) == recorded
    assert normalization_of_run(eval_run.info.run_id) is None  # only a training input defines it


# -- the pyfunc explain parameter ----------------------------------------------------------------------


def test_pyfunc_explain_parameter_returns_the_training_lrp_heatmap(
    loaded: LoadedClassifier, packaged: str
) -> None:
    pyfunc = mlflow.pyfunc.load_model(packaged)
    params = pyfunc.metadata.signature.params
    assert [p.to_dict() for p in params.params] == [
        {"name": EXPLAIN_PARAM, "default": False, "shape": None, "type": "boolean"}
    ]
    meta = pyfunc.metadata.metadata["isnetflow"]
    assert meta["normalization"] == loaded.facts.normalization and meta["normalization"]["image_size"] == 96
    x = np.random.default_rng(0).random((3, 1, 48, 48), dtype=np.float32)
    plain = pyfunc.predict(x)
    assert list(plain.columns) == ["normal", "covid"]
    explained = pyfunc.predict(x, params={EXPLAIN_PARAM: True})
    np.testing.assert_array_equal(explained[["normal", "covid"]].to_numpy(), plain.to_numpy())
    predicted = plain.to_numpy().argmax(1)
    assert list(explained["explained_class"]) == [["normal", "covid"][i] for i in predicted]
    maps = np.stack(explained[HEATMAP].to_list())
    ref = relevance(loaded.module, torch.from_numpy(x), torch.from_numpy(predicted), epsilon=0.01)
    assert maps.shape == (3, 48, 48)
    np.testing.assert_allclose(maps, ref.numpy()[:, 0], rtol=1e-5, atol=1e-7)


# -- inputs: the model's normalization -----------------------------------------------------------------


def test_a_dicom_becomes_exactly_the_training_input(eval_trained: Trained, loaded: LoadedClassifier) -> None:
    from isnetflow.training import load_train_data

    data = load_train_data(
        eval_trained.validated, eval_trained.masks, loaded.facts.train_config(), classes=loaded.facts.classes
    )
    df = read_manifest(eval_trained.validated, valid_only=True).set_index("sop_instance_uid")
    for key in data.keys[:3]:
        path = Path(df.loc[key, "uri"])
        first = prepare_file(path, loaded.facts)
        again = prepare_file(path, loaded.facts)
        np.testing.assert_array_equal(first.image, again.image)
        np.testing.assert_array_equal(first.image, data.images[data.keys.index(key)].numpy()[0])
        assert first.kind == "dicom" and first.image.shape == (48, 48)


def test_a_png_or_jpeg_becomes_what_training_makes_of_it(loaded: LoadedClassifier, tmp_path: Path) -> None:
    """A public dataset's picture is windowed and letterboxed by the validate stage's picture path, as a
    PNG/JPEG listed in labels.csv is for training; an annotated colour picture is refused as training
    would quarantine it."""
    from isnetflow.stages import validate
    from isnetflow.training.data import load_array, resize_pair

    rng = np.random.default_rng(0)
    gray = (100 + 50 * rng.random((60, 80))).astype(np.uint8)  # a narrow, non-square 8-bit picture
    Image.fromarray(gray).save(tmp_path / "narrow.png")
    other = (100 + 50 * rng.random((70, 50))).astype(np.uint8)  # another picture: not a duplicate
    Image.fromarray(other).convert("RGB").save(tmp_path / "rgb-gray.jpg", quality=95)
    arrows = np.repeat(gray[..., None], 3, axis=-1)
    arrows[10:30, 10:40] = (255, 0, 0)
    Image.fromarray(arrows).save(tmp_path / "arrows.png")
    (tmp_path / "labels.csv").write_text(
        "path,label,patient_id,site\n"
        + "".join(f"{n},covid,p{i},S\n" for i, n in enumerate(("narrow.png", "rgb-gray.jpg", "arrows.png")))
    )
    cfg = ValidateConfig.model_validate(loaded.facts.normalization)
    result = validate.run(cfg, tmp_path, tmp_path / "validated", labels=tmp_path / "labels.csv")
    manifest = result.manifest.set_index("path")
    for name in ("narrow.png", "rgb-gray.jpg"):
        item = prepare_file(tmp_path / name, loaded.facts)
        stored = load_array(tmp_path / "validated" / manifest.loc[name, "image"])
        expected, _ = resize_pair(stored, np.zeros(stored.shape, dtype=np.float32), loaded.facts.image_size)
        np.testing.assert_array_equal(item.image, expected.numpy()[0])
        low, high = item.header["window"]  # the picture's own range is stretched to 0..1, as in training
        assert item.kind == "image" and 90 <= low < high <= 160  # JPEG widens it a little
    assert manifest.loc["arrows.png", "reason_code"] == "colour_image"
    with pytest.raises(InputError) as err:
        prepare_file(tmp_path / "arrows.png", loaded.facts)
    assert err.value.code == "colour_image"


def test_quarantine_reasons_are_the_validate_stages(
    eval_trained: Trained, loaded: LoadedClassifier, store: str, tmp_path: Path
) -> None:
    """Explain applies the validate stage's image checks with its reasons; the data-set checks (PHI,
    identifiers, site) quarantine a file for training but do not stop explaining it."""
    from isnetflow.stages import validate

    src = _dicoms(eval_trained)[0]
    bad = tmp_path / "in"
    bad.mkdir()
    ds = pydicom.dcmread(src)
    ds.Modality = "MR"
    ds.save_as(bad / "mr.dcm")
    ds = pydicom.dcmread(src)
    ds.PatientName = "Doe^Jane"
    ds.save_as(bad / "phi.dcm")
    ds = pydicom.dcmread(src)
    del ds.PatientID
    del ds.InstitutionName
    ds.save_as(bad / "anonymous.dcm")
    (bad / "notes.txt").write_text("not an image\n")
    (bad / "empty.dcm").write_bytes(b"")
    cfg = ValidateConfig.model_validate(loaded.facts.normalization)
    manifest = validate.run(cfg, bad, tmp_path / "validated").manifest.set_index("path")
    expected = prepare_file(src, loaded.facts).image
    for name, code in (("phi.dcm", "phi"), ("anonymous.dcm", "missing_identifier")):
        assert manifest.loc[name, "reason_code"] == code  # not for training ...
        np.testing.assert_array_equal(prepare_file(bad / name, loaded.facts).image, expected)  # ... explained
    for name in ("mr.dcm", "notes.txt", "empty.dcm"):
        with pytest.raises(InputError) as err:
            prepare_file(bad / name, loaded.facts)
        reason = manifest.loc[name, "reason"]
        if manifest.loc[name, "status"] == "ignored":  # validate adds the rule that ignored it
            assert name == "notes.txt" and reason.startswith(f"{err.value.reason}; not named .dcm")
            reason = err.value.reason
        assert err.value.reason == reason and err.value.reason
        assert err.value.code == manifest.loc[name, "reason_code"]
        assert str(err.value) == f"{bad / name}: {reason}"
    code, _, err_text = _cli(
        store,
        "--model",
        str(loaded.facts.source_uri),
        "--input",
        str(bad / "mr.dcm"),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 1
    assert err_text.strip().splitlines()[-1] == f"error: {bad / 'mr.dcm'}: {manifest.loc['mr.dcm', 'reason']}"


def test_a_model_without_normalization_refuses_dicom_in_one_line(
    eval_trained: Trained, loaded: LoadedClassifier
) -> None:
    from dataclasses import replace

    facts = replace(loaded.facts, normalization=None, source_uri="runs:/old/model")
    with pytest.raises(ExplainError, match=r"^runs:/old/model: records no normalization settings"):
        prepare_file(_dicoms(eval_trained)[0], facts)


# -- the explain command -------------------------------------------------------------------------------


def test_explain_cli_writes_an_overlay_and_scores_per_image(
    eval_trained: Trained, loaded: LoadedClassifier, packaged: str, store: str, tmp_path: Path
) -> None:
    folder = tmp_path / "inputs"
    (folder / "sub").mkdir(parents=True)
    dicoms = _dicoms(eval_trained)
    shutil.copy(dicoms[0], folder / "a.dcm")
    shutil.copy(dicoms[1], folder / "sub" / "b.dcm")
    png = prepare_file(dicoms[2], loaded.facts).image
    Image.fromarray((png * 65535).round().astype(np.uint16)).save(folder / "c.png")
    code, out, err = _cli(store, "--model", packaged, "--input", str(folder), "--out", str(tmp_path / "out"))
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "explanations.json").read_text())
    assert [Path(r["file"]).name for r in summary["images"]] == ["a.dcm", "c.png", "b.dcm"]
    for stem in ("a", "c", "sub__b"):
        record = json.loads((tmp_path / "out" / f"{stem}.json").read_text())
        assert record["status"] == "explained" and set(record["scores"]) == {"normal", "covid"}
        assert abs(sum(record["scores"].values()) - 1) < 1e-6
        assert record["heatmap"]["method"].startswith("isnetflow.lrp.relevance")
        heatmap = np.load(tmp_path / "out" / f"{stem}.heatmap.npy")
        assert heatmap.shape == (48, 48) and np.abs(heatmap).sum() > 0
        with Image.open(tmp_path / "out" / f"{stem}.overlay.png") as im:
            assert im.size[0] > 300
    a = json.loads((tmp_path / "out" / "a.json").read_text())
    assert a["normalization"]["validate"] == {
        "window": "percentile",
        "percentiles": [0.5, 99.5],
        "image_size": 96,
        "image_format": "npy",
    }
    # a PNG goes the training's picture path (window, letterbox) and its record says which settings
    c = json.loads((tmp_path / "out" / "c.json").read_text())
    assert c["kind"] == "image" and c["normalization"] == a["normalization"]
    direct = mlflow.pyfunc.load_model(packaged).predict(
        prepare_file(folder / "c.png", loaded.facts).image[None, None]
    )
    assert c["scores"]["covid"] == pytest.approx(float(direct["covid"].iloc[0]), abs=1e-4)
    assert len(out.strip().splitlines()) == 3

    code, _, err = _cli(
        store, "--model", packaged, "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "out2")
    )
    assert code == 2 and err.strip() == f"error: {tmp_path / 'missing'}: no such file or folder"
    assert not (tmp_path / "out2").exists()  # nothing written for a call that cannot run


def test_explain_on_the_real_dicom_files(
    real_dicom_dir: Path, packaged: str, store: str, tmp_path: Path
) -> None:
    from isnetflow.dicom import analyze

    # the validate stage would quarantine both (one has no PatientID, the other no InstitutionName) ...
    cfg = ValidateConfig()
    reasons = {
        p.name: next(i.code for i in analyze(p.read_bytes(), cfg).issues if i.is_error)
        for p in sorted(real_dicom_dir.glob("*.dcm"))
    }
    assert reasons == {
        "CR-MONO1-10-chest.dcm": "missing_identifier",
        "cr-chest-pa-jpeg-baseline.dcm": "no_site",
    }
    # ... explain checks only the image: both are explained without --site or --patient-id
    args = ["--model", packaged, "--input", str(real_dicom_dir)]
    code, out, err = _cli(store, *args, "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert len(out.strip().splitlines()) == 2
    site_args = ["--site", "Public CR", "--patient-id", "P-1"]  # still accepted; they change nothing scored
    assert _cli(store, *args, *site_args, "--out", str(tmp_path / "c"))[0] == 0
    for stem in ("CR-MONO1-10-chest", "cr-chest-pa-jpeg-baseline"):
        b = json.loads((tmp_path / "b" / f"{stem}.json").read_text())
        c = json.loads((tmp_path / "c" / f"{stem}.json").read_text())
        assert b["scores"] == c["scores"] and b["status"] == "explained"
        np.testing.assert_array_equal(
            np.load(tmp_path / "b" / f"{stem}.heatmap.npy"), np.load(tmp_path / "c" / f"{stem}.heatmap.npy")
        )
    mono1 = json.loads((tmp_path / "b" / "CR-MONO1-10-chest.json").read_text())
    assert mono1["header"]["photometric_interpretation"] == "MONOCHROME1"
    assert any("meta header" in w for w in mono1["warnings"])
    # a file that is not an image is still refused
    notes = tmp_path / "notes.dcm"
    notes.write_text("not an image\n")
    code, _, err = _cli(store, "--model", packaged, "--input", str(notes), "--out", str(tmp_path / "d"))
    assert code == 1 and err.strip().startswith(f"error: {notes}: not a DICOM file")
    refused = json.loads((tmp_path / "d" / "explanations.json").read_text())["images"]
    assert [(r["status"], r["reason_code"]) for r in refused] == [("refused", "not_dicom")]
