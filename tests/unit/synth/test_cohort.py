"""The synthetic cohort: layout, DICOM validity, mask alignment, the planted shortcut, determinism."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.metrics import matthews_corrcoef
from typer.testing import CliRunner

from isnetflow.cli import app
from isnetflow.config import SynthConfig
from isnetflow.synth import display_array, generate_cohort, plan_cohort, render_item


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cohort200(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's acceptance command, run through the real CLI."""
    out = tmp_path_factory.mktemp("c200")
    res = CliRunner().invoke(app, ["synth", "--out", str(out), "--n", "200", "--seed", "0", "--workers", "1"])
    assert res.exit_code == 0, res.output
    return out


def test_layout(cohort200: Path) -> None:
    labels = _rows(cohort200 / "labels.csv")
    truth = _rows(cohort200 / "truth.csv")
    assert len(labels) == len(truth) == 200
    assert list(labels[0]) == ["path", "label", "patient_id", "site"]
    assert {"path", "cue_present"} <= set(truth[0])
    info = json.loads((cohort200 / "cohort.json").read_text())
    assert info["n"] == 200 and len(info["sites"]) >= 5
    dcm = sorted((cohort200 / "dicom").rglob("*.dcm"))
    masks = sorted((cohort200 / "masks").glob("*.png"))
    assert len(dcm) == len(masks) == 200
    for row in labels:
        p = Path(row["path"])
        assert p.parts[0] == "dicom" and len(p.parts) == 4 and (cohort200 / p).is_file()
        assert p.parts[2] == row["patient_id"]
    assert {r["label"] for r in labels} == {"normal", "covid"}


def test_every_dicom_is_valid_part10_and_deidentified(cohort200: Path) -> None:
    labels = {r["path"]: r for r in _rows(cohort200 / "labels.csv")}
    seen_uids = set()
    for rel, row in labels.items():
        path = cohort200 / rel
        with path.open("rb") as f:
            assert f.read(132)[128:] == b"DICM", f"{rel}: no Part-10 preamble"
        ds = pydicom.dcmread(path)  # no force: must be a proper file
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality in {"CR", "DX"}
        assert ds.ViewPosition in {"PA", "AP"}
        assert ds.InstitutionName == row["site"]
        assert ds.PatientID == row["patient_id"]
        assert path.stem == ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.StudyInstanceUID and ds.SOPInstanceUID not in seen_uids
        seen_uids.add(ds.SOPInstanceUID)
        assert str(ds.PatientName) == "" and ds.PatientBirthDate == "" and ds.PatientIdentityRemoved == "YES"
        px = ds.pixel_array
        assert px.shape == (ds.Rows, ds.Columns)
        assert px.max() < 2**ds.BitsStored and px.std() > 0
        assert ds.PhotometricInterpretation in {"MONOCHROME1", "MONOCHROME2"}


def test_sites_differ_in_acquisition(cohort200: Path) -> None:
    info = json.loads((cohort200 / "cohort.json").read_text())
    sites = info["sites"]
    assert {s["photometric"] for s in sites} == {"MONOCHROME1", "MONOCHROME2"}
    assert {s["bits_stored"] for s in sites} == {8, 10, 12, 16}
    assert len({(s["rows"], s["columns"]) for s in sites}) >= 4
    assert {s["role"] for s in sites} == {"internal", "external"}


def test_masks_align_with_lungs(cohort200: Path) -> None:
    """Lungs are air: inside the mask the decoded image is darker than the tissue ring around it."""
    truth = _rows(cohort200 / "truth.csv")
    for row in truth[::5]:
        img = display_array(cohort200 / row["path"])
        mask = np.asarray(Image.open(cohort200 / row["mask"])) > 127
        assert mask.shape == img.shape
        assert set(np.unique(np.asarray(Image.open(cohort200 / row["mask"])))) <= {0, 255}
        assert 0.08 < mask.mean() < 0.45, row["path"]
        ring = ndimage.binary_dilation(mask, iterations=max(3, img.shape[0] // 40)) & ~mask
        assert img[mask].mean() + 0.1 < img[ring].mean(), row["path"]
        assert ndimage.label(mask)[1] == 2


def test_shortcut_correlation_internal_vs_external(cohort200: Path) -> None:
    labels = {r["path"]: r for r in _rows(cohort200 / "labels.csv")}
    truth = _rows(cohort200 / "truth.csv")
    info = json.loads((cohort200 / "cohort.json").read_text())
    role = {s["name"]: s["role"] for s in info["sites"]}
    by_site: dict[str, tuple[list[int], list[int]]] = {}
    for t in truth:
        lab = labels[t["path"]]
        y, c = by_site.setdefault(lab["site"], ([], []))
        y.append(int(lab["label"] != info["negative_class"]))
        c.append(int(t["cue_present"]))
    for site, (y, c) in by_site.items():
        phi = matthews_corrcoef(y, c)
        if role[site] == "internal":
            assert phi >= 0.8, (site, phi)
        else:
            assert phi <= 0.2, (site, phi)
    # The cue exists at least somewhere externally (the anti-correlated site), drawn only outside lungs.
    assert any(int(t["cue_present"]) for t in truth if role[t["site"]] == "external")
    assert info["shortcut"]["cue_pixels_inside_lungs"] == 0
    for t in truth:
        assert (int(t["cue_pixels"]) > 0) == bool(int(t["cue_present"])), t["path"]


def test_patients_grouped_within_site(cohort200: Path) -> None:
    labels = _rows(cohort200 / "labels.csv")
    sites: dict[str, set[str]] = {}
    lab: dict[str, set[str]] = {}
    for r in labels:
        sites.setdefault(r["patient_id"], set()).add(r["site"])
        lab.setdefault(r["patient_id"], set()).add(r["label"])
    assert all(len(s) == 1 for s in sites.values())
    assert all(len(s) == 1 for s in lab.values())
    assert len(sites) < len(labels), "some patients should have a follow-up image"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic_across_workers_and_seed_sensitive(tmp_path: Path) -> None:
    cfg = SynthConfig(n=70, size=96, seed=3, workers=1)
    generate_cohort(cfg, tmp_path / "a", progress=False)
    generate_cohort(cfg.model_copy(update={"workers": 2}), tmp_path / "b", progress=False)
    generate_cohort(cfg.model_copy(update={"seed": 4}), tmp_path / "c", progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_cue_footprint_outside_lungs_and_visible() -> None:
    cfg = SynthConfig(n=24, size=160, seed=11)
    for item in plan_cohort(cfg):
        r = render_item(item, cfg)
        assert not (r.cue_footprint & r.lung).any()
        if item.cue:
            # Large enough to survive downsampling to 128 px: > 0.3 % of the image.
            assert r.cue_footprint.mean() > 0.003, item


def test_preview_png(tmp_path: Path, synth_cohort: Path) -> None:
    from isnetflow.synth import write_preview

    png = write_preview(synth_cohort, tmp_path / "p.png")
    im = Image.open(png)
    assert im.width > 400 and im.height > 600
    assert np.asarray(im.convert("L")).std() > 20


def test_cli_preview_only(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["synth", "--preview", str(tmp_path / "p.png"), "--n", "30", "--size", "96"]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_cli_requires_out_or_preview() -> None:
    res = CliRunner().invoke(app, ["synth"])
    assert res.exit_code != 0
