"""Validating from S3 (a moto server on loopback) gives the same manifest as from the local folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from isnetflow.config import ValidateConfig
from isnetflow.dicom import read_image
from isnetflow.stages.validate import ValidateError, run

pytestmark = pytest.mark.integration

COMPARED = [
    "path",
    "status",
    "reason",
    "reason_code",
    "sha256",
    "label",
    "patient_id",
    "site",
    "sop_instance_uid",
]


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (random port) and the standard AWS variables pointing at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def cohort_with_bad_files(synth_cohort: Path, tmp_path: Path) -> Path:
    """The small cohort plus two broken files and two ignored ones (a README, a file in a hidden folder),
    so statuses and reasons are compared too."""
    root = tmp_path / "cohort"
    shutil.copytree(synth_cohort / "dicom", root / "dicom")
    shutil.copy(synth_cohort / "labels.csv", root / "labels.csv")
    first = sorted((root / "dicom").rglob("*.dcm"))[0]
    first.write_bytes(first.read_bytes()[:-300])
    (root / "dicom" / "notes.dcm").write_text("not an image")
    (root / "dicom" / "README").write_text("exported from PACS\n")
    (root / "dicom" / ".cache").mkdir()
    shutil.copy(first, root / "dicom" / ".cache" / "copy.dcm")
    return root


def test_s3_manifest_equals_local_manifest(
    s3_endpoint: str, cohort_with_bad_files: Path, tmp_path: Path
) -> None:
    root = cohort_with_bad_files
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="cxr")
    for f in sorted(root.rglob("*")):
        if f.is_file():
            s3.upload_file(str(f), "cxr", f"site-upload/{f.relative_to(root).as_posix()}")

    cfg = ValidateConfig(image_size=32, min_images_per_site=1, workers=2)  # 61 files: a process pool
    local = run(cfg, root / "dicom", tmp_path / "local", labels=root / "labels.csv")
    remote = run(cfg, "s3://cxr/site-upload/dicom", tmp_path / "s3", labels="s3://cxr/site-upload/labels.csv")

    assert len(local.manifest) == len(remote.manifest) == 63
    assert local.manifest[COMPARED].equals(remote.manifest[COMPARED])
    assert remote.summary["counts"] == {"valid": 59, "quarantined": 2, "ignored": 2}
    assert set(remote.manifest["reason_code"]) == {"", "pixel_data_truncated", "not_dicom", "excluded"}
    # the S3 listing returns the excluded key too: listed as ignored, with the pattern that matched
    hidden = remote.manifest[remote.manifest["path"] == ".cache/copy.dcm"].iloc[0]
    assert (hidden["status"], hidden["reason"]) == (
        "ignored",
        "excluded by validate.exclude pattern '.*/' (matches .cache/)",
    )
    readme = remote.manifest[remote.manifest["path"] == "README"].iloc[0]
    assert (readme["status"], readme["reason_code"]) == ("ignored", "not_dicom")
    notes = remote.manifest[remote.manifest["path"] == "notes.dcm"].iloc[0]
    assert "no label" in notes["issues"]  # unlisted too, but "not DICOM" is the primary reason
    assert remote.manifest["uri"].str.startswith("s3://cxr/site-upload/dicom/").all()
    assert remote.summary["input"] == "s3://cxr/site-upload/dicom"
    # the normalized images are identical
    for a, b in zip(local.manifest["image"].dropna(), remote.manifest["image"].dropna(), strict=True):
        assert (tmp_path / "local" / a).read_bytes() == (tmp_path / "s3" / b).read_bytes()

    # the reader accepts s3:// URIs directly
    uri = remote.manifest.loc[remote.manifest["status"] == "valid", "uri"].iloc[0]
    image, header = read_image(uri, size=32)
    assert image.shape == (32, 32) and header["sop_instance_uid"]


def test_s3_errors_are_one_line(s3_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(ValidateError, match=r"s3://no-such-bucket/x: cannot list objects: .*NoSuchBucket"):
        run(ValidateConfig(), "s3://no-such-bucket/x", tmp_path)
    boto3.client("s3").create_bucket(Bucket="empty")
    with pytest.raises(ValidateError, match="no input files found"):
        run(ValidateConfig(), "s3://empty/prefix", tmp_path)


def test_listing_reads_every_page(s3_endpoint: str) -> None:
    """S3 returns at most 1000 keys per ListObjectsV2 call: a prefix with more is read page by page,
    and excluded keys (hidden files, folder markers) are dropped on every page, not only the first;
    :func:`scan_files` returns the excluded files (not the folder markers) with the pattern that matched."""
    from concurrent.futures import ThreadPoolExecutor

    from isnetflow.dicom.source import list_files, scan_files

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="many")
    keys = [f"export/site-{i % 7}/img-{i:05d}.dcm" for i in range(1205)]
    hidden = [f"export/site-{i}/.DS_Store" for i in range(7)] + ["export/.hidden/a.dcm", "export/site-0/"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="many", Key=k, Body=b"x" * 3), keys + hidden))
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="many", Prefix="export/"))
    assert len(pages) == 2  # the listing really spans two pages
    files = list_files("s3://many/export", exclude=(".*", ".*/"))
    assert [f.relpath for f in files] == sorted(k.removeprefix("export/") for k in keys)
    assert all(f.size == 3 and f.uri == f"s3://many/export/{f.relpath}" for f in files)
    # scan_files returns the same files, and the excluded keys (never the folder marker) with their pattern
    found, excluded = scan_files("s3://many/export", exclude=(".*/", ".*"))
    assert found == files
    assert [(e.file.relpath, e.pattern, e.component) for e in excluded] == [
        (".hidden/a.dcm", ".*/", ".hidden/"),
        *[(f"site-{i}/.DS_Store", ".*", ".DS_Store") for i in range(7)],
    ]
    assert all(e.file.size == 3 and e.file.uri == f"s3://many/export/{e.file.relpath}" for e in excluded)
