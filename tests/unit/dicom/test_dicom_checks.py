"""Per-file checks: each defect of a valid synthetic DICOM yields its own issue code, never an exception."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from isnetflow.config import ValidateConfig
from isnetflow.dicom import DicomReadError, analyze, load_dicom, read_image
from tests.unit.dicom._synthetic import mono_pair

CFG = ValidateConfig(image_size=64)
# the mutations below set invalid values on purpose; pydicom warns about them
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    """One valid synthetic file per photometric kind: 'mono1' (CR, 10-bit) and 'mono2' (DX, 12-bit)."""
    return mono_pair(tmp_path_factory.mktemp("dcm"), size=64, seed=3)


def _bytes(ds: Dataset, **kwargs: Any) -> bytes:
    bio = io.BytesIO()
    pydicom.dcmwrite(bio, ds, enforce_file_format=True, **kwargs)
    return bio.getvalue()


def _mutated(ds: Dataset, fn: Callable[[Dataset], None]) -> bytes:
    d = copy.deepcopy(ds)
    fn(d)
    return _bytes(d)


def _codes(data: bytes, cfg: ValidateConfig = CFG, **kw: Any) -> list[str]:
    return [i.code for i in analyze(data, cfg, **kw).issues if i.is_error]


def test_valid_files_pass_and_are_normalized(base: dict[str, Dataset]) -> None:
    for ds in base.values():
        a = analyze(_bytes(ds), CFG)
        assert a.ok, [str(i) for i in a.issues]
        assert [i.code for i in a.issues] == ["burned_in"]  # synthetic files flag their burned-in text
        assert a.image is not None and a.image.shape == (64, 64) and a.image.dtype == np.float32
        assert a.image.min() >= 0.0 and a.image.max() <= 1.0
        assert len(a.sha256) == 64 and a.letterbox is not None


def _set(keyword: str, value: Any) -> Callable[[Dataset], None]:
    return lambda d: setattr(d, keyword, value)


def _del(keyword: str) -> Callable[[Dataset], None]:
    return lambda d: delattr(d, keyword)


def _pixels(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Dataset], None]:
    def apply(d: Dataset) -> None:
        d.PixelData = np.ascontiguousarray(fn(d.pixel_array.copy())).astype(np.uint16).tobytes()

    return apply


def _float_pixels_with_nan(d: Dataset) -> None:
    arr = d.pixel_array.astype(np.float32)
    arr[3, 3] = np.nan
    del d.PixelData
    for kw in ("BitsStored", "HighBit", "PixelRepresentation"):
        delattr(d, kw)
    d.BitsAllocated = 32
    d.FloatPixelData = arr.tobytes()


def _half_pixel_data(d: Dataset) -> None:
    d.PixelData = d.PixelData[: len(d.PixelData) // 2]


def _unknown_ts(d: Dataset) -> None:
    d.file_meta.TransferSyntaxUID = "1.2.3.4"


def _encapsulated(ts: str) -> Callable[[Dataset], None]:
    def apply(d: Dataset) -> None:
        d.file_meta.TransferSyntaxUID = ts
        d.PixelData = encapsulate([b"\xff\xd8 not really a jpeg " * 8])
        d["PixelData"].VR = "OB"

    return apply


HEADER_DEFECTS: list[tuple[str, Callable[[Dataset], None], str]] = [
    ("MR modality", _set("Modality", "MR"), "modality"),
    ("no modality", _del("Modality"), "modality"),
    ("lateral view", _set("ViewPosition", "LL"), "view"),
    ("no SOPInstanceUID", _del("SOPInstanceUID"), "missing_identifier"),
    ("no PatientID", _del("PatientID"), "missing_identifier"),
    ("malformed UID", _set("SOPInstanceUID", "1.2.abc.3"), "malformed_uid"),
    ("patient name", _set("PatientName", "Doe^John"), "phi"),
    ("birth date", _set("PatientBirthDate", "19700101"), "phi"),
    ("RGB", _set("PhotometricInterpretation", "RGB"), "photometric"),
    ("BitsStored > BitsAllocated", _set("BitsStored", 20), "bits"),
    ("BitsStored 4", _set("BitsStored", 4), "bits"),
    ("no pixel data", _del("PixelData"), "no_pixel_data"),
    ("no Rows", _del("Rows"), "bad_dimensions"),
    (
        "decompression bomb",
        lambda d: (setattr(d, "Rows", 60000), setattr(d, "Columns", 60000)),
        "image_too_large",
    ),
    ("multi-frame", _set("NumberOfFrames", 3), "multi_frame"),
    ("truncated pixel data", _half_pixel_data, "pixel_data_truncated"),
    ("unknown transfer syntax", _unknown_ts, "transfer_syntax"),
    ("MPEG-2: no decoder", _encapsulated("1.2.840.10008.1.2.4.100"), "transfer_syntax"),
    ("corrupt HTJ2K", _encapsulated("1.2.840.10008.1.2.4.201"), "decode_failed"),
    ("corrupt JPEG", _encapsulated("1.2.840.10008.1.2.4.50"), "decode_failed"),
    ("constant image", _pixels(lambda a: np.full_like(a, 300)), "constant_image"),
    ("two gray levels", _pixels(lambda a: (a > a.mean()).astype(a.dtype) + 500), "low_contrast"),
    ("values above BitsStored", _pixels(lambda a: np.where(a > a.mean(), a | 0x8000, a)), "bits_exceeded"),
    ("NaN in float pixel data", _float_pixels_with_nan, "non_finite"),
]


@pytest.mark.parametrize(("name", "mutate", "code"), HEADER_DEFECTS, ids=[d[0] for d in HEADER_DEFECTS])
def test_each_defect_has_its_reason(base: dict[str, Dataset], name: str, mutate: Any, code: str) -> None:
    ds = base["mono1"]
    if name == "unknown transfer syntax":
        d = copy.deepcopy(ds)
        mutate(d)
        data = _bytes(d, implicit_vr=False, little_endian=True)
    else:
        data = _mutated(ds, mutate)
    a = analyze(data, CFG)
    errors = [i for i in a.issues if i.is_error]
    assert errors, f"{name}: no error in {[str(i) for i in a.issues]}"
    assert errors[0].code == code, f"{name}: {[str(i) for i in errors]}"
    assert errors[0].message and "\n" not in errors[0].message
    assert a.image is None


def test_bomb_is_rejected_from_the_header_before_decoding(
    base: dict[str, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pixels decoded despite the declared size")

    monkeypatch.setattr("isnetflow.dicom.ingest.decode_pixels", no_decoding)
    data = _mutated(base["mono2"], lambda d: (setattr(d, "Rows", 60000), setattr(d, "Columns", 60000)))
    a = analyze(data, CFG)
    assert a.issues[0].code == "image_too_large"
    assert "60000x60000" in a.issues[0].message and "3600 MP" in a.issues[0].message
    with pytest.raises(DicomReadError, match="decompression-bomb"):
        read_image(data)


def test_deidentification_placeholders_and_pseudonyms_are_accepted(base: dict[str, Dataset]) -> None:
    ds = base["mono2"]
    assert _codes(_mutated(ds, _set("PatientName", "ANONYMIZED"))) == []
    assert _codes(_mutated(ds, _set("PatientName", ds.PatientID))) == []
    strict = CFG.model_copy(update={"allow_pseudonym_name": False})
    assert _codes(_mutated(ds, _set("PatientName", ds.PatientID)), strict) == ["phi"]
    relaxed = CFG.model_copy(update={"require_deidentified": False})
    assert _codes(_mutated(ds, _set("PatientName", "Doe^John")), relaxed) == []


def test_a_pseudonym_equal_to_the_files_own_patient_id_is_not_phi(base: dict[str, Dataset]) -> None:
    """A de-identified export writes its pseudonym into PatientName and PatientID; labels.csv then
    assigns its own patient_id. The name equals the file's PatientID: not PHI."""
    ds = base["mono2"]
    pseudonymized = _mutated(ds, _set("PatientName", ds.PatientID))
    a = analyze(pseudonymized, CFG, patient_id="labels-patient-7")
    assert a.ok and a.fields["patient_id"] == "labels-patient-7", [str(i) for i in a.issues]
    assert _codes(pseudonymized, patient_id=ds.PatientID) == []  # the labels' id: accepted as before
    # a real name is PHI whichever id is used, and the strict setting still refuses the pseudonym
    named = _mutated(ds, _set("PatientName", "Doe^Jane"))
    assert [str(i) for i in analyze(named, CFG, patient_id="labels-patient-7").issues if i.is_error] == [
        "PHI present: PatientName"
    ]
    strict = CFG.model_copy(update={"allow_pseudonym_name": False})
    assert _codes(pseudonymized, strict, patient_id="labels-patient-7") == ["phi"]


def test_a_dicomdir_is_quarantined_with_its_own_reason(base: dict[str, Dataset], tmp_path: Path) -> None:
    """pydicom's FileSet writes a real DICOMDIR (Media Storage Directory, no pixels)."""
    from pydicom.fileset import FileSet

    ds = copy.deepcopy(base["mono2"])
    for kw, value in (("StudyDate", "20240101"), ("StudyTime", "120000"), ("StudyID", "1")):
        setattr(ds, kw, getattr(ds, kw, None) or value)
    ds.SeriesNumber, ds.InstanceNumber = ds.get("SeriesNumber") or 1, ds.get("InstanceNumber") or 1
    fs = FileSet()
    fs.add(ds)
    fs.write(tmp_path)
    data = (tmp_path / "DICOMDIR").read_bytes()
    assert pydicom.dcmread(tmp_path / "DICOMDIR").file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    issues = analyze(data, CFG).issues
    assert [(i.code, i.message) for i in issues] == [
        ("dicomdir", "DICOMDIR (Media Storage Directory): a file-set index, not an image")
    ]
    with pytest.raises(DicomReadError, match="DICOMDIR"):
        read_image(tmp_path / "DICOMDIR")


def test_issue_codes_are_defined_in_one_place() -> None:
    from isnetflow.dicom.issues import IGNORED_CODES, NOT_IMAGE_CODES, REASON_CODES, Issue

    assert set(NOT_IMAGE_CODES).issubset(IGNORED_CODES) and set(IGNORED_CODES).issubset(REASON_CODES)
    rules = {"excluded", "labels_file", "provided_mask", "own_output", "not_dicom", "dicomdir"}
    assert set(IGNORED_CODES) == rules
    with pytest.raises(ValueError, match="unknown issue code 'made_up'"):
        Issue("made_up", "a code nobody documented")


def test_burned_in_annotation_is_configurable(base: dict[str, Dataset]) -> None:
    data = _bytes(base["mono2"])
    assert _codes(data) == []
    assert _codes(data, CFG.model_copy(update={"burned_in_annotation": "quarantine"})) == ["burned_in"]


def test_labels_override_identifiers(base: dict[str, Dataset]) -> None:
    no_site = _mutated(base["mono2"], _del("InstitutionName"))
    assert _codes(no_site) == ["no_site"]
    assert _codes(no_site, site="Some Hospital") == []
    no_pid = _mutated(base["mono2"], _del("PatientID"))
    a = analyze(no_pid, CFG, patient_id="P-9")
    assert a.ok and a.fields["patient_id"] == "P-9"


def test_missing_view_position_is_a_warning(base: dict[str, Dataset]) -> None:
    a = analyze(_mutated(base["mono2"], _del("ViewPosition")), CFG)
    assert a.ok and "no_view_position" in [i.code for i in a.issues]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"this is a text file, not a DICOM file\n" * 20, "not_dicom"),
        (b"\x00" * 128 + b"DICM" + b"\x02\x00\x00", "unreadable"),
    ],
    ids=["zero bytes", "text", "preamble then garbage"],
)
def test_file_level_failures(data: bytes, code: str) -> None:
    a = analyze(data, CFG)
    assert [i.code for i in a.issues] == [code]
    with pytest.raises(DicomReadError):
        load_dicom(data)


def test_truncated_files(base: dict[str, Dataset]) -> None:
    data = _bytes(base["mono1"])
    assert _codes(data[: len(data) - 1000])[0] == "pixel_data_truncated"
    head = _codes(data[:400])  # cut inside the header: no pixel data at all
    assert head and head[0] in {"no_pixel_data", "unreadable"}


def test_meta_less_dataset_is_read_with_a_warning(base: dict[str, Dataset]) -> None:
    """Like the real CR-MONO1 file: a bare implicit-VR dataset without preamble or meta header."""
    plain = Dataset({elem.tag: elem for elem in copy.deepcopy(base["mono1"])})  # no preamble, no meta
    bio = io.BytesIO()
    pydicom.dcmwrite(bio, plain, implicit_vr=True, little_endian=True, enforce_file_format=False)
    bare = bio.getvalue()
    assert bare[128:132] != b"DICM" and bare[:2] == b"\x08\x00"
    a = analyze(bare, CFG)
    assert a.ok, [str(i) for i in a.issues]
    assert "no_meta_header" in [i.code for i in a.issues]


# --------------------------------------------------------------------------------------------------
# Random header mutations never raise
# --------------------------------------------------------------------------------------------------

INT_KEYWORDS = [
    "Rows",
    "Columns",
    "BitsStored",
    "BitsAllocated",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
]
STR_KEYWORDS = [
    "PhotometricInterpretation",
    "Modality",
    "ViewPosition",
    "SOPInstanceUID",
    "PatientID",
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "NumberOfFrames",
    "PixelSpacing",
]
TS_UIDS = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.5",
    "9.9.9",
]

mutation = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(INT_KEYWORDS + STR_KEYWORDS + ["PixelData"])),
    st.tuples(st.just("int"), st.sampled_from(INT_KEYWORDS), st.integers(0, 65535)),
    st.tuples(
        st.just("str"),
        st.sampled_from(STR_KEYWORDS),
        st.text(alphabet="0123456789.-+eE MONOCHRMGBLPAXD\\", max_size=16),
    ),
    st.tuples(st.just("pixel_bytes"), st.floats(0.0, 1.5)),
    st.tuples(st.just("ts"), st.sampled_from(TS_UIDS)),
    st.tuples(st.just("cut"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.floats(0.0, 1.0), st.integers(0, 255)),
)


def apply_mutations(ds: Dataset, ops: list[tuple[Any, ...]]) -> bytes:
    """Dataset-level edits first (written with pydicom), then byte-level damage."""
    d = copy.deepcopy(ds)
    byte_ops = []
    for op in ops:
        kind = op[0]
        if kind == "delete":
            if op[1] in d:
                delattr(d, op[1])
        elif kind in ("int", "str"):
            try:
                setattr(d, op[1], op[2])
            except (ValueError, TypeError, OverflowError):
                # not a valid value for the attribute's VR: store it as text (a malformed element)
                d.add_new(tag_for_keyword(op[1]), "LO", str(op[2]))
        elif kind == "pixel_bytes":
            if "PixelData" in d:
                n = len(d.PixelData)
                k = int(n * op[1])
                d.PixelData = d.PixelData[:k] if k <= n else d.PixelData + b"\x00" * (k - n)
        elif kind == "ts":
            d.file_meta.TransferSyntaxUID = op[1]
        else:  # "cut" / "flip": applied to the written bytes
            byte_ops.append(op)
    try:
        implicit = d.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
        data = _bytes(
            d, implicit_vr=implicit, little_endian=d.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2"
        )
    except Exception:
        data = _bytes(ds)  # pydicom refused to write this combination: damage the bytes instead
    for op in byte_ops:
        if op[0] == "cut":
            data = data[: int(len(data) * op[1])]
        elif data:
            i = min(len(data) - 1, int(len(data) * op[1]))
            data = data[:i] + bytes([op[2]]) + data[i + 1 :]
    return data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(mutation, min_size=1, max_size=3), which=st.sampled_from(["mono1", "mono2"]))
def test_random_mutations_never_raise(
    base: dict[str, Dataset], ops: list[tuple[Any, ...]], which: str
) -> None:
    data = apply_mutations(base[which], ops)
    a = analyze(data, CFG)  # must not raise
    if a.ok:
        assert a.image is not None and a.image.shape == (64, 64)
        assert np.isfinite(a.image).all() and a.image.min() >= 0.0 and a.image.max() <= 1.0
    else:
        first = next(i for i in a.issues if i.is_error)
        assert first.message.strip() and first.code and "Traceback" not in first.message


def test_mutation_helper_really_mutates(base: dict[str, Dataset], tmp_path: Path) -> None:
    """Guard for the property test above: its edits reach the bytes that are analyzed."""
    data = apply_mutations(base["mono2"], [("str", "Modality", "MR"), ("delete", "PixelData")])
    assert _codes(data) == ["no_pixel_data", "modality"]
    assert apply_mutations(base["mono2"], [("cut", 0.0)]) == b""


def test_the_readme_lists_every_reason_code_as_the_catalogue_says() -> None:
    """The README's table of reason codes is the catalogue's own rendering: a code added to REASON_CODES
    without the README, or edited in one of them only, fails here."""
    import re
    from pathlib import Path

    from isnetflow.dicom.issues import REASON_CODES, reasons_markdown

    readme = (Path(__file__).resolve().parents[3] / "docs" / "usage.md").read_text()
    found = re.search(r"<!-- reason-codes:start -->\n(.*?)\n<!-- reason-codes:end -->", readme, re.S)
    assert found, "docs/usage.md lost its reason-codes markers"
    assert found.group(1) == reasons_markdown(), (
        "docs/usage.md's reason table is stale: paste the output of "
        "python -c 'from isnetflow.dicom.issues import reasons_markdown; print(reasons_markdown())'"
    )
    assert len(found.group(1).splitlines()) == len(REASON_CODES) + 2
