"""Where the input files live: a local folder (recursive) or an ``s3://bucket/prefix``.

S3 access goes through boto3's default credential and endpoint resolution, so the standard
environment variables work unchanged: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for
MinIO / moto / other S3-compatible stores, and ``AWS_PROFILE``.

Locations are plain strings ("URIs"): an absolute local path or ``s3://bucket/key``.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "DICOM_SUFFIXES",
    "ExcludedFile",
    "SourceError",
    "SourceFile",
    "download_tree",
    "exists",
    "is_s3",
    "join",
    "list_files",
    "parent",
    "read_bytes",
    "relative_to",
    "resolve",
    "s3_client",
    "scan_files",
    "split_s3",
]

#: File name extensions that claim DICOM content (lower case; compare with ``name.lower()``). The
#: validate stage quarantines such a file that does not parse as a damaged DICOM rather than ignoring it.
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


class SourceError(Exception):
    """The input location cannot be listed or a file cannot be fetched (message names the location)."""


@dataclass(frozen=True)
class SourceFile:
    """One input file: its location and its path relative to the listed root (posix separators)."""

    uri: str
    relpath: str
    size: int | None = None


@dataclass(frozen=True)
class ExcludedFile:
    """A file that an ``exclude`` pattern matches: the file, the pattern, and the path component it
    matched (a folder ends in ``/``, e.g. ``.git/``)."""

    file: SourceFile
    pattern: str
    component: str


def is_s3(uri: str | os.PathLike[str]) -> bool:
    """True for an ``s3://`` URI."""
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket name")
    return bucket, key


def resolve(uri: str | os.PathLike[str]) -> str:
    """Canonical form: absolute local path, or ``s3://bucket/key`` with a normalized key."""
    s = str(uri)
    if is_s3(s):
        bucket, key = split_s3(s)
        norm = posixpath.normpath(key) if key else ""
        norm = "" if norm == "." else norm.lstrip("/")
        return f"s3://{bucket}/{norm}"
    return str(Path(s).expanduser().resolve())


def parent(uri: str) -> str:
    """The folder containing ``uri``."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        return f"s3://{bucket}/{posixpath.dirname(key)}"
    return str(Path(uri).parent)


def join(base: str, relpath: str) -> str:
    """``relpath`` (posix, may contain ``..``) resolved against the folder ``base``."""
    if is_s3(base):
        bucket, key = split_s3(base)
        return resolve(f"s3://{bucket}/{posixpath.join(key, relpath)}")
    return str((Path(base) / PurePosixPath(relpath)).resolve())


def relative_to(uri: str, root: str) -> str:
    """``uri`` relative to the folder ``root`` (posix; may start with ``..`` when outside)."""
    if is_s3(uri) != is_s3(root):
        return uri
    if is_s3(uri):
        b1, k1 = split_s3(uri)
        b2, k2 = split_s3(root)
        if b1 != b2:
            return uri
        return posixpath.relpath("/" + k1, "/" + k2) if k2 else k1
    return Path(os.path.relpath(uri, root)).as_posix()


_clients: dict[tuple[str | None, ...], Any] = {}


def s3_client() -> Any:
    """A boto3 S3 client for the current environment, cached per process and environment."""
    key = tuple(
        os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION",
            "AWS_PROFILE",
        )
    )
    if key not in _clients:
        import boto3

        _clients[key] = boto3.session.Session().client("s3")
    return _clients[key]


def _exclusion(relpath: str, exclude: Sequence[str]) -> tuple[str, str] | None:
    """The first ``(pattern, component)`` of ``exclude`` matching a path component of ``relpath``, else
    None; a pattern ending in ``/`` matches folders only (the component is then reported as ``name/``)."""
    parts = relpath.split("/")
    for pat in exclude:
        if pat.endswith("/"):
            hit = next((part for part in parts[:-1] if fnmatch.fnmatchcase(part, pat[:-1])), None)
            if hit is not None:
                return pat, f"{hit}/"
        else:
            hit = next((part for part in parts if fnmatch.fnmatchcase(part, pat)), None)
            if hit is not None:
                return pat, hit
    return None


def list_files(root: str | os.PathLike[str], *, exclude: Sequence[str] = (".*/",)) -> list[SourceFile]:
    """All files under ``root`` (recursive), sorted by relative path, skipping ``exclude`` matches.

    ``exclude`` holds glob patterns for path components; one ending in ``/`` matches folders only
    (the default skips hidden folders such as ``.git`` but lists hidden files such as ``.DS_Store``).
    The validate stage uses :func:`scan_files` instead, which returns the excluded files too.

    ``root`` may also be a single local file (then it is the only entry, relative path = its name).
    Raises :class:`SourceError` when the location does not exist or cannot be listed.
    """
    return _scan(root, exclude, keep_excluded=False)[0]


def scan_files(
    root: str | os.PathLike[str], *, exclude: Sequence[str] = (".*/",)
) -> tuple[list[SourceFile], list[ExcludedFile]]:
    """Every file under ``root``: ``(files, excluded)``, each sorted by relative path.

    ``files`` is what :func:`list_files` returns; ``excluded`` holds the files an ``exclude`` pattern
    matches (also those inside an excluded folder, which is walked), each with the first pattern that
    matched, so that a caller can account for every file it found. S3 folder markers (keys ending in
    ``/``) are not files and appear in neither list.
    """
    return _scan(root, exclude, keep_excluded=True)


def _scan(
    root: str | os.PathLike[str], exclude: Sequence[str], *, keep_excluded: bool
) -> tuple[list[SourceFile], list[ExcludedFile]]:
    uri = resolve(root)
    if is_s3(uri):
        return _list_s3(uri, exclude, keep_excluded=keep_excluded)
    p = Path(uri)
    if p.is_file():
        return [SourceFile(uri, p.name, p.stat().st_size)], []
    if not p.is_dir():
        raise SourceError(f"{root}: input folder does not exist")
    out: list[SourceFile] = []
    excluded: list[ExcludedFile] = []
    for dirpath, dirnames, filenames in os.walk(p, onerror=None):
        rel_dir = Path(dirpath).relative_to(p).as_posix()
        if not keep_excluded:
            dirnames[:] = [d for d in dirnames if _exclusion(f"{d}/", exclude) is None]
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            hit = _exclusion(rel, exclude)
            if hit is not None and not keep_excluded:
                continue
            # ``p`` is canonical and os.walk does not descend into linked folders, so only a linked
            # file needs resolving (realpath costs a syscall per path component)
            full = os.path.join(dirpath, name)
            size: int | None = None
            try:
                st = os.lstat(full)
                if stat.S_ISLNK(st.st_mode):
                    full = os.path.realpath(full)
                    st = os.stat(full)
                size = st.st_size
            except OSError:
                pass
            f = SourceFile(full, rel, size)
            if hit is None:
                out.append(f)
            else:
                excluded.append(ExcludedFile(f, *hit))
    return sorted(out, key=lambda f: f.relpath), sorted(excluded, key=lambda e: e.file.relpath)


def _list_s3(
    uri: str, exclude: Sequence[str], *, keep_excluded: bool
) -> tuple[list[SourceFile], list[ExcludedFile]]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    prefix = key.rstrip("/") + "/" if key else ""
    out: list[SourceFile] = []
    excluded: list[ExcludedFile] = []
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                k = obj["Key"]
                rel = k[len(prefix) :]
                if not rel or k.endswith("/"):  # the prefix itself, or a folder marker
                    continue
                f = SourceFile(f"s3://{bucket}/{k}", rel, int(obj.get("Size", 0)))
                hit = _exclusion(rel, exclude)
                if hit is None:
                    out.append(f)
                elif keep_excluded:
                    excluded.append(ExcludedFile(f, *hit))
    except (BotoCoreError, ClientError) as exc:
        raise SourceError(f"{uri}: cannot list objects: {exc}") from exc
    return sorted(out, key=lambda f: f.relpath), sorted(excluded, key=lambda e: e.file.relpath)


def read_bytes(uri: str, *, max_bytes: int | None = None) -> bytes:
    """The content of a local file or S3 object.

    Raises :class:`SourceError` (not found, access denied, larger than ``max_bytes``).
    """
    if is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3(uri)
        try:
            obj = s3_client().get_object(Bucket=bucket, Key=key)
            size = int(obj.get("ContentLength", 0))
            if max_bytes is not None and size > max_bytes:
                obj["Body"].close()
                raise SourceError(f"{uri}: file too large ({size} bytes > limit {max_bytes})")
            data: bytes = obj["Body"].read()
            return data
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise SourceError(f"{uri}: not found") from exc
            raise SourceError(f"{uri}: cannot read: {exc}") from exc
        except BotoCoreError as exc:
            raise SourceError(f"{uri}: cannot read: {exc}") from exc
    p = Path(uri)
    try:
        if max_bytes is not None:
            size = p.stat().st_size
            if size > max_bytes:
                raise SourceError(f"{uri}: file too large ({size} bytes > limit {max_bytes})")
        return p.read_bytes()
    except FileNotFoundError as exc:
        raise SourceError(f"{uri}: not found") from exc
    except OSError as exc:
        raise SourceError(f"{uri}: cannot read: {exc.strerror or exc}") from exc


def download_tree(uri: str, dest: str | os.PathLike[str]) -> Path:
    """Copy every object under ``s3://bucket/prefix`` (or a KFP ``minio://bucket/prefix`` artifact
    location, which is the same S3 store behind ``AWS_ENDPOINT_URL``) into the folder ``dest``, keeping
    relative paths; returns ``dest``. Hidden files are copied too: the folder is an artifact, not input.

    Raises :class:`SourceError` when the prefix holds nothing or an object cannot be read.
    """
    if uri.startswith("minio://"):
        uri = "s3://" + uri[len("minio://") :]
    files = list_files(uri, exclude=())
    if not files:
        raise SourceError(f"{uri}: no objects under this prefix")
    root = Path(dest)
    for f in files:
        target = root / PurePosixPath(f.relpath)
        if ".." in PurePosixPath(f.relpath).parts:
            raise SourceError(f"{f.uri}: object key escapes the prefix")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(f.uri))
    return root


def exists(uri: str) -> bool:
    """Whether a local file or S3 object exists."""
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError:
            return False
    return Path(uri).is_file()
