"""The validate stage end to end: a good synthetic cohort, a corpus of bad inputs, random header damage."""

from __future__ import annotations

import copy
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from isnetflow.config import ValidateConfig
from isnetflow.dicom import decode_pixels, letterbox, load_dicom
from isnetflow.stages.validate import MANIFEST_COLUMNS, ValidateError, run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about invalid values we set

REQUIRED_COLUMNS = [
    "path",
    "status",
    "reason",
    "sop_instance_uid",
    "study_instance_uid",
    "patient_id",
    "site",
    "label",
    "modality",
    "view_position",
    "photometric_interpretation",
    "bits_stored",
    "rows",
    "columns",
    "pixel_spacing",
    "sha256",
]


def _cohort_config(cohort: Path, **updates: Any) -> ValidateConfig:
    info = json.loads((cohort / "cohort.json").read_text())
    settings: dict[str, Any] = {
        "image_size": 96,
        "internal_sites": info["internal_sites"],
        "external_sites": info["external_sites"],
    }
    return ValidateConfig(**{**settings, **updates})


@pytest.fixture(scope="module")
def good_run(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("validated")
    result = run(
        _cohort_config(synth_cohort), synth_cohort / "dicom", out, labels=synth_cohort / "labels.csv"
    )
    return out, result


def test_synthetic_cohort_validates(synth_cohort: Path, good_run: tuple[Path, Any]) -> None:
    out, result = good_run
    info = json.loads((synth_cohort / "cohort.json").read_text())
    n_files = len(list((synth_cohort / "dicom").rglob("*.dcm")))
    s = result.summary
    assert result.passed and result.failure is None
    assert (
        s["files"] == n_files == 60
        and s["pass_rate"] == 1.0
        and s["counts"] == {"valid": 60, "quarantined": 0, "ignored": 0}
    )
    assert s["expectations"]["success"] and s["expectations"]["statistics"]["unsuccessful_expectations"] == 0
    assert set(s["sites"]) == {site["name"] for site in info["sites"]}
    for site in info["sites"]:
        got = s["sites"][site["name"]]
        assert got["valid"] == site["n_images"] and got["role"] == site["role"]
        assert got["classes"] == {k: v for k, v in site["class_counts"].items() if v}
    assert s["warnings"] == {"burned-in annotation": 60}  # the synthetic sites burn in text: warned, kept

    # the files on disk agree with the returned objects
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest.columns) == MANIFEST_COLUMNS and set(REQUIRED_COLUMNS) <= set(manifest.columns)
    assert len(manifest) == 60 and (manifest["status"] == "valid").all() and (manifest["reason"] == "").all()
    assert manifest["path"].is_monotonic_increasing
    on_disk = json.loads((out / "validation.json").read_text())
    assert on_disk["passed"] and on_disk["counts"] == s["counts"]
    assert (
        len(on_disk["expectations"]["results"]) == s["expectations"]["statistics"]["evaluated_expectations"]
    )
    html = (out / "validation.html").read_text()
    assert "isnetflow validate: PASSED" in html and "isnetflow-manifest" in html

    labels = pd.read_csv(synth_cohort / "labels.csv")
    joined = manifest.merge(labels.assign(path=labels["path"].str.removeprefix("dicom/")), on="path")
    assert len(joined) == 60
    assert (joined["label_x"] == joined["label_y"]).all() and (joined["site_x"] == joined["site_y"]).all()

    images = sorted((out / "images").iterdir())
    assert len(images) == 60 and all(p.suffix == ".npy" for p in images)
    for rel in manifest["image"]:
        img = np.load(out / rel)
        assert img.shape == (96, 96) and img.dtype == np.uint16


def test_monochrome1_sites_have_dark_lungs_like_monochrome2(
    synth_cohort: Path, good_run: tuple[Path, Any]
) -> None:
    """Inside the ground-truth lung masks the normalized image is darker than outside, at every site;
    for MONOCHROME1 the stored values say the opposite, so this holds only because of the inversion."""
    out, result = good_run
    inside_by_kind: dict[str, list[float]] = {"MONOCHROME1": [], "MONOCHROME2": []}
    for row in result.manifest.to_dict("records"):
        img = np.load(out / row["image"]).astype(np.float32) / 65535
        mask = np.asarray(Image.open(synth_cohort / "masks" / f"{row['sop_instance_uid']}.png")) > 0
        assert mask.shape == (int(row["rows"]), int(row["columns"]))
        lung, box = letterbox(mask, img.shape[0], resample="nearest")
        body, _ = letterbox(np.ones_like(mask), img.shape[0], resample="nearest")  # excludes the padding
        assert (box.pad_top, box.pad_left) == (row["pad_top"], row["pad_left"])
        inside, outside = float(img[lung].mean()), float(img[body & ~lung].mean())
        assert inside < outside - 0.1, (row["site"], inside, outside)
        inside_by_kind[row["photometric_interpretation"]].append(inside)
        if row["photometric_interpretation"] == "MONOCHROME1":
            raw = decode_pixels(load_dicom(row["uri"]).dataset).astype(np.float64)
            assert raw[mask].mean() > raw[~mask].mean()
    assert len(inside_by_kind["MONOCHROME1"]) == 20 and len(inside_by_kind["MONOCHROME2"]) == 40
    assert abs(np.mean(inside_by_kind["MONOCHROME1"]) - np.mean(inside_by_kind["MONOCHROME2"])) < 0.1


def test_rerun_into_the_same_folder_replaces_the_images(synth_cohort: Path, tmp_path: Path) -> None:
    cfg = _cohort_config(synth_cohort, image_size=32, min_pass_rate=0.5)
    first = run(cfg, synth_cohort / "dicom", tmp_path, labels=synth_cohort / "labels.csv")
    (tmp_path / "images" / "stale.npy").write_bytes(b"x")
    second = run(cfg, synth_cohort / "dicom", tmp_path, labels=synth_cohort / "labels.csv")
    assert len(list((tmp_path / "images").iterdir())) == second.summary["counts"]["valid"] == 60
    pd.testing.assert_frame_equal(
        first.manifest.drop(columns=["image"]), second.manifest.drop(columns=["image"]), check_dtype=False
    )


# --------------------------------------------------------------------------------------------------
# A corpus of bad inputs
# --------------------------------------------------------------------------------------------------


def _write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _variant(base: Dataset, **changes: Any) -> Dataset:
    d = copy.deepcopy(base)
    uid = generate_uid()
    d.SOPInstanceUID = uid
    d.file_meta.MediaStorageSOPInstanceUID = uid
    for k, v in changes.items():
        if v is None:
            delattr(d, k)
        else:
            setattr(d, k, v)
    return d


EXPECTED = {
    "ok/a.dcm": ("valid", ""),
    "ok/b.dcm": ("valid", ""),
    "ok/c.dcm": ("valid", ""),
    "bad/truncated.dcm": ("quarantined", "pixel_data_truncated"),
    "bad/zero.dcm": ("quarantined", "empty_file"),
    "bad/text.dcm": ("quarantined", "not_dicom"),
    "bad/no_pixels.dcm": ("quarantined", "no_pixel_data"),
    "bad/mr.dcm": ("quarantined", "modality"),
    "bad/lateral.dcm": ("quarantined", "view"),
    "bad/huge.dcm": ("quarantined", "image_too_large"),
    "bad/phi.dcm": ("quarantined", "phi"),
    "bad/constant.dcm": ("quarantined", "constant_image"),
    "zz/copy_of_a.dcm": ("quarantined", "duplicate_uid"),
    "leak/site_x.dcm": ("quarantined", "patient_leakage"),
    "leak/site_y.dcm": ("quarantined", "patient_leakage"),
    "unlabelled.dcm": ("quarantined", "no_label"),
    "gone/listed_only.dcm": ("quarantined", "missing_file"),
    "labels.csv": ("ignored", "labels_file"),  # inside the input: listed, not an input image
}


@pytest.fixture(scope="module")
def bad_corpus(synth_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_corpus")
    labels = pd.read_csv(synth_cohort / "labels.csv")
    mono2 = labels[labels["site"] == "Northfield University Hospital"]["path"].tolist()
    (root / "ok").mkdir()
    for name, rel in zip(("a", "b", "c"), mono2[:3], strict=True):
        shutil.copy(synth_cohort / rel, root / "ok" / f"{name}.dcm")
    base = pydicom.dcmread(synth_cohort / mono2[3])
    data = (synth_cohort / mono2[4]).read_bytes()
    (root / "bad").mkdir()
    (root / "bad" / "truncated.dcm").write_bytes(data[: len(data) - 500])
    (root / "bad" / "zero.dcm").write_bytes(b"")
    (root / "bad" / "text.dcm").write_text("patient list\nthis is not an image\n" * 10)
    _write(_variant(base, PixelData=None), root / "bad" / "no_pixels.dcm")
    _write(_variant(base, Modality="MR"), root / "bad" / "mr.dcm")
    _write(_variant(base, ViewPosition="LL"), root / "bad" / "lateral.dcm")
    _write(_variant(base, Rows=60000, Columns=60000), root / "bad" / "huge.dcm")
    _write(_variant(base, PatientName="Doe^Jane", PatientBirthDate="19610203"), root / "bad" / "phi.dcm")
    flat = _variant(base)
    flat.PixelData = np.full((base.Rows, base.Columns), 1000, np.uint16).tobytes()
    _write(flat, root / "bad" / "constant.dcm")
    (root / "zz").mkdir()
    shutil.copy(root / "ok" / "a.dcm", root / "zz" / "copy_of_a.dcm")
    # two different films of one patient (the same film twice would be a duplicate image, not a leak)
    for site, rel in (("X", mono2[5]), ("Y", mono2[6])):
        film = pydicom.dcmread(synth_cohort / rel)
        _write(
            _variant(film, PatientID="LEAK-1", InstitutionName=f"Site {site}"),
            root / "leak" / f"site_{site.lower()}.dcm",
        )
    _write(_variant(base), root / "unlabelled.dcm")
    rows = [{"path": p, "label": "normal"} for p in EXPECTED if p not in ("unlabelled.dcm", "labels.csv")]
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def bad_run(bad_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = ValidateConfig(image_size=64, min_images_per_site=1, workers=2)
    return run(cfg, bad_corpus, tmp_path_factory.mktemp("bad_out"), labels=bad_corpus / "labels.csv")


def test_bad_inputs_are_quarantined_with_the_right_reason(bad_run: Any) -> None:
    m = bad_run.manifest
    assert sorted(m["path"]) == sorted(EXPECTED)  # every file, plus the listed-but-missing one, once
    got = {r["path"]: (r["status"], r["reason_code"] or "") for r in m.to_dict("records")}
    assert got == EXPECTED
    q = m[m["status"] == "quarantined"]
    assert q["reason"].map(lambda r: bool(r) and "\n" not in r and "Traceback" not in r).all()
    reasons = dict(zip(m["path"], m["reason"], strict=True))
    assert reasons["bad/mr.dcm"] == "modality MR not in CR, DX"
    assert reasons["bad/lateral.dcm"] == "non-frontal view (ViewPosition=LL)"
    assert reasons["bad/phi.dcm"] == "PHI present: PatientName, PatientBirthDate"
    assert reasons["zz/copy_of_a.dcm"] == "duplicate SOPInstanceUID (first: ok/a.dcm)"
    assert reasons["leak/site_x.dcm"] == "patient LEAK-1 in multiple sites (Site X; Site Y)"
    assert reasons["gone/listed_only.dcm"] == "listed in labels but not found"
    assert reasons["unlabelled.dcm"] == "no label (not listed in labels.csv)"
    assert reasons["bad/text.dcm"].startswith("not a DICOM file")
    # the duplicate is byte-identical to its original
    sha = dict(zip(m["path"], m["sha256"], strict=True))
    assert sha["zz/copy_of_a.dcm"] == sha["ok/a.dcm"]


def test_bad_run_outputs_and_verdict(bad_run: Any) -> None:
    out, s = bad_run.out, bad_run.summary
    assert s["counts"] == {"valid": 3, "quarantined": 14, "ignored": 1}
    assert s["reasons"]["patient_leakage"] == 2 and s["reasons"]["empty_file"] == 1
    assert s["ignored_reasons"] == {"labels_file": 1}
    assert s["patient_leakage"] == {"LEAK-1": "patient LEAK-1 in multiple sites (Site X; Site Y)"}
    # 3 of 17: bad/text.dcm is named as DICOM, so a damaged DICOM that counts; labels.csv is ignored
    assert not bad_run.passed and bad_run.failure.startswith("pass rate 0.176 < 0.9 (14 of 17 DICOM files")
    assert s["not_images"] == 1  # the rows left out of the pass rate (= counts.ignored)
    assert "\n" not in bad_run.failure
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
        f"{uid}.npy" for uid in bad_run.manifest.loc[bad_run.manifest.status == "valid", "sop_instance_uid"]
    )


def test_leakage_can_fail_the_suite_instead(bad_corpus: Path, tmp_path: Path) -> None:
    cfg = ValidateConfig(image_size=32, min_images_per_site=1, min_pass_rate=0.0, leakage_action="fail")
    result = run(cfg, bad_corpus, tmp_path, labels=bad_corpus / "labels.csv")
    leak = result.manifest[result.manifest["path"].str.startswith("leak/")]
    assert (leak["status"] == "valid").all()
    assert not result.passed and "each patient in one site only (2 unexpected" in result.failure


def test_unusable_inputs_raise_one_line_errors(bad_corpus: Path, tmp_path: Path) -> None:
    cfg = ValidateConfig()
    with pytest.raises(ValidateError, match="does not exist"):
        run(cfg, tmp_path / "nowhere", tmp_path / "out")
    bad_labels = tmp_path / "l.csv"
    bad_labels.write_text("file,class\na.dcm,normal\n")
    with pytest.raises(ValidateError, match=r"l\.csv: unknown column layout"):
        run(cfg, bad_corpus, tmp_path / "out", labels=bad_labels)
    with pytest.raises(ValidateError, match="cannot read labels file"):
        run(cfg, bad_corpus, tmp_path / "out", labels=tmp_path / "missing.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidateError, match="no input files"):
        run(cfg, tmp_path / "empty", tmp_path / "out")


def test_without_labels_files_keep_header_identity(bad_corpus: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(bad_corpus / "ok", src)
    cfg = ValidateConfig(image_size=32, min_images_per_site=1)
    for _ in range(2):  # the output folder inside the input is not read back as input on a re-run
        result = run(cfg, src, src / "validated")
        assert result.passed and result.summary["counts"]["valid"] == 3
    # on the re-run the first run's output is listed, each file ignored as own_output
    m = result.manifest
    own = m[m["status"] == "ignored"]
    assert len(own) == len(m) - 3 and set(own["reason_code"]) == {"own_output"}
    assert {"validated/manifest.csv", "validated/validation.json"} <= set(own["path"])
    assert own["reason"].str.startswith("in the output folder of this validation").all()
    valid = m[m["status"] == "valid"]
    assert valid["label"].isna().all()
    assert (valid["site"] == "Northfield University Hospital").all()


# --------------------------------------------------------------------------------------------------
# Random header damage never crashes the stage
# --------------------------------------------------------------------------------------------------

damage = st.one_of(
    st.tuples(
        st.just("delete"),
        st.sampled_from(
            [
                "Rows",
                "Columns",
                "BitsStored",
                "PhotometricInterpretation",
                "PixelData",
                "SOPInstanceUID",
                "Modality",
            ]
        ),
    ),
    st.tuples(
        st.just("set"),
        st.sampled_from(["Rows", "Columns", "BitsStored", "BitsAllocated"]),
        st.integers(0, 65535),
    ),
    st.tuples(
        st.just("set"),
        st.sampled_from(["PhotometricInterpretation", "ViewPosition", "RescaleSlope", "NumberOfFrames"]),
        st.sampled_from(["", "RGB", "MONOCHROME1", "LL", "0", "-1", "nan", "1e400", "abc", "3"]),
    ),
    st.tuples(st.just("pixels"), st.floats(0.0, 1.2)),
    st.tuples(
        st.just("ts"),
        st.sampled_from(["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.5"]),
    ),
    st.tuples(st.just("cut"), st.floats(0.0, 1.0)),
)


def _damaged(base: Dataset, ops: list[tuple[Any, ...]]) -> bytes:
    d = copy.deepcopy(base)
    uid = generate_uid()
    d.SOPInstanceUID = uid
    cut = None
    for op in ops:
        try:
            if op[0] == "delete" and op[1] in d:
                delattr(d, op[1])
            elif op[0] == "set":
                setattr(d, op[1], op[2])
            elif op[0] == "pixels" and "PixelData" in d:
                n = len(d.PixelData)
                d.PixelData = (d.PixelData + b"\0" * n)[: int(n * op[1])]
            elif op[0] == "ts":
                d.file_meta.TransferSyntaxUID = op[1]
            elif op[0] == "cut":
                cut = op[1]
        except (ValueError, TypeError, OverflowError):
            pass  # pydicom refuses this value for the VR
    bio = io.BytesIO()
    try:
        pydicom.dcmwrite(bio, d, enforce_file_format=True)
    except Exception:
        bio = io.BytesIO()
        d.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
        pydicom.dcmwrite(bio, d, enforce_file_format=True)
    data = bio.getvalue()
    return data[: int(len(data) * cut)] if cut is not None else data


@pytest.fixture(scope="module")
def damage_base(synth_cohort: Path) -> Dataset:
    labels = pd.read_csv(synth_cohort / "labels.csv")
    return pydicom.dcmread(synth_cohort / labels["path"].iloc[0])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.lists(damage, min_size=1, max_size=3), min_size=5, max_size=5))
def test_random_header_damage_never_crashes_the_stage(damage_base: Dataset, batch: list[list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i, ops in enumerate(batch):
            (src / f"f{i}.dcm").write_bytes(_damaged(damage_base, ops))
        result = run(ValidateConfig(image_size=32, min_images_per_site=1), src, Path(tmp) / "out")
        m = result.manifest
        assert len(m) == 5 and set(m["status"]) <= {"valid", "quarantined"}
        q = m[m["status"] == "quarantined"]
        assert q["reason"].map(lambda r: isinstance(r, str) and r.strip() != "").all()
        for rel in m.loc[m["status"] == "valid", "image"]:
            assert np.load(Path(tmp) / "out" / rel).shape == (32, 32)


# --------------------------------------------------------------------------------------------------
# Speed guards: no threads left behind (workers keep starting with fork), the benchmark's figures
# --------------------------------------------------------------------------------------------------


def test_runs_leave_no_threads_behind(synth_cohort: Path, tmp_path: Path) -> None:
    """tqdm (our progress bar, GX's bars) starts a monitor thread that would outlive the run; with it
    alive the next run in this process starts its workers with forkserver, where each worker
    re-imports the main module before its first file (seconds instead of milliseconds)."""
    import multiprocessing
    import threading

    from isnetflow.validation import dataset

    # no new thread may outlive a run (threads of earlier tests may still end meanwhile: compare sets)
    before = set(threading.enumerate())
    cfg = _cohort_config(synth_cohort, image_size=32, workers=2)
    labels = synth_cohort / "labels.csv"
    for i, progress in enumerate((False, True)):
        run(cfg, synth_cohort / "dicom", tmp_path / f"o{i}", labels=labels, progress=progress)
        assert not set(threading.enumerate()) - before, threading.enumerate()
    if len(before) == 1 and "fork" in multiprocessing.get_all_start_methods():
        assert dataset._pool_context().get_start_method() == "fork"


def test_bench_ingest_reports_its_figures() -> None:
    from isnetflow.bench.ingest import bench_ingest

    r = bench_ingest(n=24, size=64, image_size=32, repeats=1, unique=12)
    assert r["files"] == r["valid"] == 24 and r["image_size"] == 64 and r["output_size"] == 32
    assert r["unique_images"] == 12 and r["bare_failed"] == 0
    for key in ("bare_dcmread_files_per_s", "validate_files_per_s", "per_file_phase_files_per_s"):
        assert r[key] > 0
    ratio = r["validate_files_per_s"] / r["bare_dcmread_files_per_s"]
    assert r["ratio"] == pytest.approx(ratio, rel=0.01, abs=0.001)  # rounded to 3 decimals
    assert r["fixed_seconds"] == pytest.approx(r["validate_seconds"] - r["per_file_phase_seconds"], abs=0.002)
    assert len(r["runs"]["bare_seconds"]) == 1 and len(r["load_average_before"]) == 3
    assert r["transfer_syntax"] == "explicit" and r["sha256_files_per_s"] > 0
    bare, hashing = 1 / r["bare_dcmread_files_per_s"], 1 / r["sha256_files_per_s"]  # seconds per file
    assert r["ceiling_ratio"] == pytest.approx(r["workers"] * bare / (bare + hashing), rel=0.01)


def test_bench_ingest_on_a_compressed_cohort(tmp_path: Path) -> None:
    """``--transfer-syntax jpeg-ls``: every file is really JPEG-LS, and all of them validate."""
    from isnetflow.bench.ingest import bench_ingest

    r = bench_ingest(n=8, size=64, image_size=32, repeats=1, unique=4, transfer_syntax="jpeg-ls")
    assert r["transfer_syntax"] == "jpeg-ls" and r["files"] == r["valid"] == 8 and r["bare_failed"] == 0
    assert r["mean_file_bytes"] < 64 * 64 * 2  # compressed: smaller than the raw 16-bit pixels alone
    with pytest.raises(ValueError, match="transfer_syntax must be one of"):
        bench_ingest(n=2, transfer_syntax="jpeg-xl")


_FAULTS_SCRIPT = """
import resource, sys
from pathlib import Path
from isnetflow.config import ValidateConfig
from isnetflow.validation import files as vf
if sys.argv[1] == "tuned":
    assert vf._keep_freed_memory()
files, out = sys.argv[2].split(","), sys.argv[3]
cfg = ValidateConfig(image_size=64)
def run():
    for i, uri in enumerate(files):
        row = vf.process_file(vf.FileTask(i, uri, uri, None, None), cfg, out)
        assert row["status"] == "valid", row
run()  # warm-up: imports, first allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    run()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (3 * len(files)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and ru_minflt: Linux only")
def test_workers_reuse_freed_memory_instead_of_faulting_it_in_per_file(tmp_path: Path) -> None:
    """RLE files (decoded into fresh buffers) page-fault their buffers in on every file under glibc's
    defaults; a worker tuned by ``_keep_freed_memory`` reuses its heap and barely faults at all."""
    from isnetflow.bench.ingest import _synthetic_cohort

    folder, _ = _synthetic_cohort(tmp_path / "c", 4, 768, 4, 0, "1.2.840.10008.1.2.5")
    files = ",".join(str(p) for p in sorted(Path(folder).rglob("*.dcm")))
    faults = {}
    for mode in ("default", "tuned"):
        proc = subprocess.run(
            [sys.executable, "-c", _FAULTS_SCRIPT, mode, files, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        faults[mode] = float(proc.stdout.strip().splitlines()[-1])
    assert faults["default"] > 200, faults  # ~1 MB decode buffers mapped afresh for every file
    assert faults["tuned"] < faults["default"] / 10, faults


# --------------------------------------------------------------------------------------------------
# Quarantine paths that need a full disk or a huge file (issue 17, item 8), with small fakes
# --------------------------------------------------------------------------------------------------


def test_too_large_and_write_failed_files_are_quarantined_and_the_rest_is_used(
    synth_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file over ``validate.max_file_bytes`` is quarantined unread (``too_large``); a normalized image
    that cannot be written (a full disk, faked for one file) is quarantined (``write_failed``) and leaves
    no image behind. Every other file is used, and the manifest lists all of them."""
    import errno

    from isnetflow.validation import files as per_file

    cohort = tmp_path / "cohort"  # labels.csv names the files relative to itself: copy both
    shutil.copytree(synth_cohort / "dicom", cohort / "dicom")
    shutil.copy(synth_cohort / "labels.csv", cohort / "labels.csv")
    dicom = cohort / "dicom"
    files = sorted(p for p in dicom.rglob("*.dcm"))
    limit = max(p.stat().st_size for p in files) + 1
    big = files[0]
    big.write_bytes(big.read_bytes() + b"\0" * limit)  # now over the limit; still a readable DICOM
    real = per_file._write_image
    failed: list[str] = []

    def write(image: Any, target: Path, cfg: ValidateConfig) -> None:
        if not failed:  # the first image written hits a full disk
            failed.append(target.name)
            target.write_bytes(b"partial")
            target.unlink()
            raise OSError(errno.ENOSPC, "No space left on device")
        real(image, target, cfg)

    monkeypatch.setattr(per_file, "_write_image", write)
    cfg = _cohort_config(synth_cohort, image_size=32, max_file_bytes=limit, workers=1, min_pass_rate=0.5)
    result = run(cfg, dicom, tmp_path / "out", labels=cohort / "labels.csv")
    m = result.manifest.set_index("path")
    assert len(m) == len(files)  # every file is in the manifest
    rel_big = big.relative_to(dicom).as_posix()
    assert (m.loc[rel_big, "status"], m.loc[rel_big, "reason_code"]) == ("quarantined", "too_large")
    assert f"limit {limit}" in m.loc[rel_big, "reason"] or "too large" in m.loc[rel_big, "reason"]
    write_failed = m[m["reason_code"] == "write_failed"]
    assert len(write_failed) == 1 and "No space left on device" in write_failed["reason"].iloc[0]
    assert write_failed["image"].isna().all()
    valid = m[m["status"] == "valid"]
    assert len(valid) == len(files) - 2 == result.summary["counts"]["valid"]
    images = {p.name for p in (tmp_path / "out" / "images").iterdir()}
    assert len(images) == len(valid)  # one image per valid row, none for the quarantined ones


def test_a_worker_that_dies_quarantines_its_file_and_loses_nothing(
    synth_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool worker killed while checking one file (a decoder segfault, the OOM killer: SIGKILL here) used
    to abort the whole stage (BrokenProcessPool). Now that file alone is quarantined (``worker_crashed``,
    after a retry on its own) and every other file gets the verdict a run without the crash gives it."""
    import multiprocessing
    import os
    import signal

    from isnetflow.validation import dataset

    dicom = synth_cohort / "dicom"
    files = sorted(dicom.rglob("*.dcm"))
    poison = files[len(files) // 2].relative_to(dicom).as_posix()
    real = dataset.process_file

    def process(task: Any, cfg: ValidateConfig, tmp_dir: str) -> dict[str, Any]:
        if task.relpath == poison:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(task, cfg, tmp_dir)

    cfg = _cohort_config(synth_cohort, image_size=32, workers=2, min_pass_rate=0.5)
    reference = run(cfg, dicom, tmp_path / "reference", labels=synth_cohort / "labels.csv").manifest
    monkeypatch.setattr(dataset, "process_file", process)  # the forked workers inherit it
    monkeypatch.setattr(dataset, "_pool_context", lambda: multiprocessing.get_context("fork"))
    result = run(cfg, dicom, tmp_path / "out", labels=synth_cohort / "labels.csv")
    m, ref = result.manifest.set_index("path"), reference.set_index("path")
    assert sorted(m.index) == sorted(ref.index)  # every file is in the manifest, once
    assert (m.loc[poison, "status"], m.loc[poison, "reason_code"]) == ("quarantined", "worker_crashed")
    others = m.drop(index=poison)
    assert others["status"].equals(ref.drop(index=poison)["status"].loc[others.index])
    assert not list((tmp_path / "out").rglob(".running-*"))  # no marker is left behind
    images = {p.name for p in (tmp_path / "out" / "images").iterdir()}
    assert len(images) == (others["status"] == "valid").sum()
