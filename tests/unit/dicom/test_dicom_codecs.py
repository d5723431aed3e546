"""Compressed transfer syntaxes PACS archives use: decoded exactly, by the fastest plugin, failures named.

Each lossless syntax must give the very same normalized image, window and checks as the uncompressed
file: a lossless archive copy must not change a training image by one bit.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, JPEG2000Lossless, JPEGLSLossless, RLELossless

from isnetflow.config import ValidateConfig
from isnetflow.dicom import analyze, read_image
from isnetflow.dicom.reader import PREFERRED_DECODERS, decode_pixels
from tests.unit.dicom._synthetic import mono_pair

CFG = ValidateConfig(image_size=64)
LOSSLESS = [RLELossless, JPEGLSLossless, JPEG2000Lossless]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    """A MONOCHROME1 (CR, 10-bit) and a MONOCHROME2 (DX, 12-bit) synthetic file, uncompressed."""
    return mono_pair(tmp_path_factory.mktemp("dcm"), size=96, seed=5)


def _encoded(ds: Dataset, ts: UID | None = None) -> bytes:
    d = pydicom.dcmread(io.BytesIO(_plain(ds)))
    if ts is not None:
        d.compress(ts)
        assert d.file_meta.TransferSyntaxUID == ts and d["PixelData"].is_undefined_length
    bio = io.BytesIO()
    d.save_as(bio, enforce_file_format=True)
    return bio.getvalue()


def _plain(ds: Dataset) -> bytes:
    bio = io.BytesIO()
    ds.save_as(bio, enforce_file_format=True)
    return bio.getvalue()


@pytest.mark.parametrize("ts", LOSSLESS, ids=[t.name for t in LOSSLESS])
@pytest.mark.parametrize("kind", ["mono1", "mono2"])
def test_lossless_archive_copy_gives_the_identical_training_image(
    synthetic: dict[str, Dataset], kind: str, ts: UID
) -> None:
    plain = analyze(_encoded(synthetic[kind]), CFG)
    packed_bytes = _encoded(synthetic[kind], ts)
    packed = analyze(packed_bytes, CFG)
    assert plain.ok and packed.ok, [str(i) for i in packed.issues]
    assert len(packed_bytes) < len(_plain(synthetic[kind]))  # really compressed
    assert packed.fields["transfer_syntax_uid"] == ts
    assert plain.image is not None and packed.image is not None
    np.testing.assert_array_equal(packed.image, plain.image)
    assert packed.window == plain.window
    assert [i.code for i in packed.issues] == [i.code for i in plain.issues]


@pytest.mark.parametrize("ts", LOSSLESS, ids=[t.name for t in LOSSLESS])
def test_real_monochrome1_file_survives_every_lossless_syntax(real_dicom_dir: Path, ts: UID) -> None:
    source = real_dicom_dir / "CR-MONO1-10-chest.dcm"
    reference, _ = read_image(source, size=64)
    ds = pydicom.dcmread(source, force=True)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian  # the file has no meta header
    ds.compress(ts)
    bio = io.BytesIO()
    ds.save_as(bio, enforce_file_format=True)
    image, header = read_image(bio.getvalue(), size=64)
    assert header["transfer_syntax_uid"] == ts
    np.testing.assert_array_equal(image, reference)


def test_jpeg_ls_is_decoded_by_charls_first(
    synthetic: dict[str, Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydicom would try libjpeg first (5x slower on JPEG-LS); the preference table puts pyjpegls first."""
    from pydicom.pixels.decoders.base import Decoder

    assert PREFERRED_DECODERS[JPEGLSLossless] == "pyjpegls"
    used: list[str] = []
    original = Decoder.as_array

    def spy(self: Decoder, src: object, **kwargs: object) -> object:
        used.append(str(kwargs.get("decoding_plugin", "")))
        return original(self, src, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Decoder, "as_array", spy)
    ds = pydicom.dcmread(io.BytesIO(_encoded(synthetic["mono2"], JPEGLSLossless)))
    arr = decode_pixels(ds)
    assert used == ["pyjpegls"]
    np.testing.assert_array_equal(arr, synthetic["mono2"].pixel_array)


def _damaged(data: bytes, filler: bytes) -> bytes:
    """``data`` with the last bytes of its codestream (before the EOI marker) replaced by ``filler``."""
    tail = data.rindex(b"\xff\xd9")
    return data[: tail - len(filler)] + filler + data[tail:]


def test_corrupt_stream_names_every_plugin_that_failed(synthetic: dict[str, Dataset]) -> None:
    """The preferred plugin fails, the others are still tried, and the reason names each one's error."""
    data = _damaged(_encoded(synthetic["mono2"], JPEGLSLossless), b"\xff\xc0" * 200)  # stray markers
    a = analyze(data, CFG)
    errors = [i for i in a.issues if i.is_error]
    assert errors and errors[0].code == "decode_failed", [str(i) for i in a.issues]
    assert "pyjpegls:" in errors[0].message and "pylibjpeg:" in errors[0].message, errors[0].message
    assert "\n" not in errors[0].message and a.image is None


def test_decoders_disagreeing_is_recorded(synthetic: dict[str, Dataset]) -> None:
    """CharLS rejects a zeroed stretch of entropy-coded data that libjpeg decodes: the file is used
    (pydicom's rule: any plugin that decodes wins) and the manifest says which plugin refused it."""
    data = _damaged(_encoded(synthetic["mono2"], JPEGLSLossless), b"\x00" * 400)
    a = analyze(data, CFG)
    assert a.ok and a.image is not None
    notes = [i.message for i in a.issues if i.code == "pydicom_warning"]
    assert any("pyjpegls could not decode the pixel data" in n for n in notes), notes
