"""The reader's fast paths give exactly what pydicom's ordinary API gives.

* :func:`header_fields` converts raw elements with pydicom's value converters instead of ``ds[tag]``;
  the reference below is the straightforward ``ds[tag].value`` implementation it replaced.
* :func:`decode_pixels` views native little-endian pixel data in place instead of running pydicom's
  decoder; the reference is ``pydicom.dcmread(...).pixel_array``.
* :func:`find_phi` reads the PHI attributes the same way.
* values larger than 16 KiB are deferred by :func:`load_dicom` and viewed without a copy.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian
from test_dicom_checks import apply_mutations, mutation  # the random header damage of the checks' tests

from isnetflow.config import SynthConfig, ValidateConfig
from isnetflow.dicom import decode_pixels, find_phi, header_fields, load_dicom
from isnetflow.dicom.reader import (
    _DEFER_BYTES,
    _FLOAT_FIELDS,
    _INT_FIELDS,
    _PIXEL_KEYWORDS,
    _STR_FIELDS,
    _as_float,
    _as_int,
    _as_str,
    _native_view,
    pixel_data_buffer,
)
from isnetflow.synth import plan_cohort, render_item
from isnetflow.synth.dicom_writer import write_dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CFG = ValidateConfig(image_size=64)


# --------------------------------------------------------------------------------------------------
# References: pydicom's ordinary element access
# --------------------------------------------------------------------------------------------------


def _ref_value(ds: Dataset, keyword: str, malformed: list[str]) -> Any:
    try:
        tag = tag_for_keyword(keyword)
        elem = ds[tag] if tag in ds._dict else None
        return None if elem is None else elem.value
    except Exception:
        malformed.append(keyword)
        return None


def reference_header_fields(ds: Dataset) -> dict[str, Any]:
    malformed: list[str] = []
    out: dict[str, Any] = {}
    for key, kw in _STR_FIELDS.items():
        out[key] = _as_str(_ref_value(ds, kw, malformed))
    for key, kw in _INT_FIELDS.items():
        out[key] = _as_int(_ref_value(ds, kw, malformed), kw, malformed)
    for key, kw in _FLOAT_FIELDS.items():
        out[key] = _as_float(_ref_value(ds, kw, malformed), kw, malformed)
    spacing = _ref_value(ds, "PixelSpacing", malformed) or _ref_value(ds, "ImagerPixelSpacing", malformed)
    out["pixel_spacing"] = None
    out["pixel_spacing_columns"] = None
    try:
        if spacing is not None and len(spacing) == 2:
            out["pixel_spacing"], out["pixel_spacing_columns"] = float(spacing[0]), float(spacing[1])
    except (TypeError, ValueError):
        malformed.append("PixelSpacing")
    meta = getattr(ds, "file_meta", None)
    ts = _ref_value(meta, "TransferSyntaxUID", malformed) if meta is not None else None
    out["transfer_syntax_uid"] = _as_str(ts)
    pixel_kw = next((kw for kw in _PIXEL_KEYWORDS if kw in ds), None)
    out["pixel_data_element"] = pixel_kw
    out["pixel_data_bytes"] = None
    if pixel_kw is not None:
        raw = _ref_value(ds, pixel_kw, malformed)
        n = len(raw) if isinstance(raw, bytes | bytearray) else 0 if raw is None else None
        out["pixel_data_bytes"] = n
    try:
        out["has_modality_lut_sequence"] = "ModalityLUTSequence" in ds
    except Exception:
        out["has_modality_lut_sequence"] = False
    out["malformed_attributes"] = sorted(set(malformed))
    return out


def reference_find_phi(ds: Dataset, cfg: ValidateConfig, patient_id: str | None = None) -> list[str]:
    placeholders = {p.upper() for p in cfg.deid_placeholders}
    found: list[str] = []
    for kw in cfg.phi_attributes:
        try:
            elem = ds.data_element(kw) if kw in ds else None
            if elem is None or elem.value is None:
                continue
            value = elem.value
            if elem.VR == "SQ":
                if len(value):
                    found.append(kw)
                continue
            values = list(value) if type(value).__name__ == "MultiValue" else [value]
            texts = [str(v).replace("^", " ").replace("=", " ").strip() for v in values]
            texts = [t for t in texts if t]
        except Exception:
            found.append(kw)
            continue
        for t in texts:
            if t.upper() in placeholders:
                continue
            if cfg.allow_pseudonym_name and patient_id and t == patient_id.strip():
                continue
            found.append(kw)
            break
    return found


def reference_pixels(data: bytes) -> np.ndarray:
    """pydicom's own decoding of a fully read (nothing deferred) dataset, first frame."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds.file_meta = copy.deepcopy(load_dicom(data).dataset.file_meta)  # the inferred syntax
    arr = ds.pixel_array
    return arr[0] if arr.ndim == 3 else arr


def _same_fields(data: bytes) -> dict[str, Any]:
    """Fast and reference header fields of ``data`` agree, also against a dataset read in full."""
    fast = header_fields(load_dicom(data).dataset)
    assert fast == reference_header_fields(load_dicom(data).dataset)
    full = pydicom.dcmread(io.BytesIO(data), force=True)  # no deferred values at all
    full.file_meta = load_dicom(data).dataset.file_meta
    assert fast == reference_header_fields(full)
    return fast


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def _bytes(ds: Dataset, *, implicit: bool = False) -> bytes:
    """``ds`` as a Part-10 file, explicit or implicit VR little endian."""
    if implicit:
        ds = copy.deepcopy(ds)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    bio = io.BytesIO()
    pydicom.dcmwrite(bio, ds, enforce_file_format=True)
    return bio.getvalue()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    """One valid synthetic file per site (CR/DX, 8/10/12/16 bits, MONOCHROME1/2), 128 px."""
    cfg = SynthConfig(n=30, size=128, seed=5)
    out: dict[str, Dataset] = {}
    for item in plan_cohort(cfg):
        if item.site in out:
            continue
        path = tmp_path_factory.mktemp("dcm") / "x.dcm"
        rendered = render_item(item, cfg)
        write_dicom(path, rendered.pixels, rendered.meta)
        out[item.site] = pydicom.dcmread(path)
    assert len(out) == len(cfg.sites) and {int(d.BitsStored) for d in out.values()} == {8, 10, 12, 16}
    return out


# --------------------------------------------------------------------------------------------------
# Header fields
# --------------------------------------------------------------------------------------------------


def test_header_fields_equal_the_reference_on_every_site(base: dict[str, Dataset]) -> None:
    for ds in base.values():
        f = _same_fields(_bytes(ds))
        assert f["malformed_attributes"] == [] and f["rows"] == ds.Rows and f["modality"] == ds.Modality


def test_header_fields_equal_the_reference_on_real_files(real_dicom_dir: Path) -> None:
    paths = sorted(real_dicom_dir.glob("*.dcm"))
    assert len(paths) >= 2, f"expected the two real CR files in {real_dicom_dir}, found {len(paths)}"
    for path in paths:
        _same_fields(path.read_bytes())


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.add_new(tag_for_keyword("Rows"), "LO", "12x"),  # text where a number belongs
        lambda d: d.add_new(tag_for_keyword("RescaleSlope"), "LO", "abc"),  # read as DS when implicit
        lambda d: setattr(d, "WindowCenter", ["40", "50"]),
        lambda d: d.add_new(tag_for_keyword("NumberOfFrames"), "LO", "1.5"),
        lambda d: setattr(d, "PixelSpacing", ["0.1"]),
        lambda d: setattr(d, "InstitutionName", "Hôpital Saint-Éloi"),
        lambda d: setattr(d, "SpecificCharacterSet", "ISO_IR 192"),
        lambda d: delattr(d, "SpecificCharacterSet"),
        lambda d: setattr(d, "PatientID", ""),
        lambda d: setattr(d, "PixelData", b""),
    ],
)
def test_header_fields_equal_the_reference_on_odd_values(base: dict[str, Dataset], edit: Any) -> None:
    d = copy.deepcopy(base["Northfield University Hospital"])
    edit(d)
    for implicit in (False, True):
        _same_fields(_bytes(d, implicit=implicit))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(mutation, min_size=1, max_size=3), which=st.integers(0, 5))
def test_header_fields_equal_the_reference_under_random_damage(
    base: dict[str, Dataset], ops: list[tuple[Any, ...]], which: int
) -> None:
    data = apply_mutations(list(base.values())[which], ops)
    try:
        load_dicom(data)
        readable = True
    except Exception:
        readable = False
    assume(readable)  # not readable at all: nothing to compare (hypothesis counts it as filtered, not passed)
    _same_fields(data)


def test_truncated_deferred_pixel_data_is_measured_like_a_full_read(base: dict[str, Dataset]) -> None:
    data = _bytes(base["Northfield University Hospital"])
    for cut in (1, 1000, len(data) // 3):
        f = _same_fields(data[: len(data) - cut])
        assert f["pixel_data_bytes"] is not None and f["pixel_data_bytes"] < len(data)


# --------------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------------


def _check_pixels(data: bytes, *, fast: bool) -> None:
    ds = load_dicom(data).dataset
    fields = header_fields(ds)
    assert (_native_view(ds, fields) is not None) == fast
    got = decode_pixels(ds, fields)
    want = reference_pixels(data)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert got.flags.writeable


def test_native_pixels_are_viewed_in_place_and_equal_pydicom(base: dict[str, Dataset]) -> None:
    in_place = 0
    for ds in base.values():
        data = _bytes(ds)
        _check_pixels(data, fast=True)
        loaded = load_dicom(data).dataset
        view = decode_pixels(loaded, header_fields(loaded), writeable=False)
        assert not view.flags.writeable
        deferred = len(ds.PixelData) > _DEFER_BYTES  # larger values stay in the input buffer
        assert isinstance(pixel_data_buffer(loaded), memoryview) == deferred
        assert np.shares_memory(view, np.frombuffer(data, np.uint8)) == deferred  # no copy at all
        in_place += deferred
    assert in_place >= 4


def test_implicit_vr_and_real_files_decode_like_pydicom(
    base: dict[str, Dataset], real_dicom_dir: Path
) -> None:
    _check_pixels(_bytes(base["Harbor Point Hospital"], implicit=True), fast=True)
    _check_pixels((real_dicom_dir / "CR-MONO1-10-chest.dcm").read_bytes(), fast=True)  # no meta header
    _check_pixels((real_dicom_dir / "cr-chest-pa-jpeg-baseline.dcm").read_bytes(), fast=False)  # JPEG


def test_signed_and_out_of_range_pixels_decode_like_pydicom(base: dict[str, Dataset]) -> None:
    ds = base["Northfield University Hospital"]  # 12 bits in 16
    stored = ds.pixel_array.astype(np.uint16)

    full_signed = copy.deepcopy(ds)  # signed, filling its container: still a plain view
    full_signed.PixelRepresentation, full_signed.BitsStored, full_signed.HighBit = 1, 16, 15
    full_signed.PixelData = (stored.astype(np.int16) - 2000).tobytes()
    _check_pixels(_bytes(full_signed), fast=True)

    narrow_signed = copy.deepcopy(ds)  # 12-bit two's complement: needs sign extension -> pydicom
    narrow_signed.PixelRepresentation = 1
    narrow_signed.PixelData = ((stored.astype(np.int16) - 2000) & 0x0FFF).astype(np.uint16).tobytes()
    _check_pixels(_bytes(narrow_signed), fast=False)

    high_bits = copy.deepcopy(ds)  # garbage above BitsStored: masked, as pydicom does
    garbage = np.where(stored > stored.mean(), stored | 0xC000, stored).astype(np.uint16)
    high_bits.PixelData = garbage.tobytes()
    _check_pixels(_bytes(high_bits), fast=True)

    eight = copy.deepcopy(base["Riverside Community Hospital"])
    assert eight.BitsAllocated == 8
    _check_pixels(_bytes(eight), fast=True)


# --------------------------------------------------------------------------------------------------
# PHI
# --------------------------------------------------------------------------------------------------


def _with_phi(ds: Dataset, case: str) -> Dataset:
    d = copy.deepcopy(ds)
    if case == "name":
        d.PatientName = "Doe^John"
    elif case == "placeholder":
        d.PatientName = "ANONYMIZED"
    elif case == "pseudonym":
        d.PatientName = d.PatientID
    elif case == "multi":
        d.OtherPatientNames = ["", "Roe^Richard"]
    elif case == "sequence":
        item = Dataset()
        item.PatientID = "X-1"
        d.OtherPatientIDsSequence = Sequence([item])
    elif case == "empty-sequence":
        d.OtherPatientIDsSequence = Sequence([])
    elif case == "birth":
        d.PatientBirthDate = "19700101"
    elif case == "physician":
        d.ReferringPhysicianName = "Who^Doctor"
    return d


@pytest.mark.parametrize(
    "case",
    ["none", "name", "placeholder", "pseudonym", "multi", "sequence", "empty-sequence", "birth", "physician"],
)
def test_find_phi_equals_the_reference(base: dict[str, Dataset], case: str) -> None:
    ds = _with_phi(base["Riverside Community Hospital"], case)
    # a sequence among the PHI attributes (not in the default list) exercises the SQ branch
    default = CFG.model_copy(update={"phi_attributes": [*CFG.phi_attributes, "OtherPatientIDsSequence"]})
    strict = default.model_copy(update={"allow_pseudonym_name": False})
    for implicit in (False, True):
        data = _bytes(ds, implicit=implicit)
        for cfg in (default, strict):
            got = find_phi(load_dicom(data).dataset, cfg, ds.PatientID)
            assert got == reference_find_phi(load_dicom(data).dataset, cfg, ds.PatientID)
            assert bool(got) == (
                case in {"name", "multi", "sequence", "birth", "physician"}
                or (case == "pseudonym" and cfg is strict)
            )


# --------------------------------------------------------------------------------------------------
# analyze: the modality LUT applied lazily gives the window and image of the materialized values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("slope", "intercept"), [("1", "0"), ("0.5", "-1024"), ("-2", "9000"), ("3", "")])
@pytest.mark.parametrize("window", ["percentile", "dicom"])
def test_analyze_equals_the_materialized_pipeline(
    base: dict[str, Dataset], slope: str, intercept: str, window: str
) -> None:
    from isnetflow.dicom import analyze, intensity_window, letterbox, modality_values, normalize_intensity

    cfg = CFG.model_copy(update={"window": window})
    for ds in base.values():
        d = copy.deepcopy(ds)
        d.RescaleSlope, d.RescaleIntercept = slope, intercept
        data = _bytes(d)
        a = analyze(data, cfg)
        assert a.ok and a.image is not None and a.window is not None, [str(i) for i in a.issues]
        loaded = load_dicom(data).dataset
        fields = header_fields(loaded)
        values = modality_values(loaded, reference_pixels(data), fields)
        want_window = intensity_window(
            values,
            method=window,  # type: ignore[arg-type]
            window_center=fields["window_center"],
            window_width=fields["window_width"],
        )
        assert a.window == want_window
        photometric = fields["photometric_interpretation"]
        image, _ = normalize_intensity(values, photometric=photometric, window=a.window)
        np.testing.assert_allclose(a.image, letterbox(image, cfg.image_size)[0], rtol=0, atol=1e-5)
