"""Preflight: the checks ``isnetflow run`` makes in seconds, before the pipeline starts.

A mistake in the command line (a missing folder, a labels file without a ``label`` column, a site name
that is not in the data, a setting out of range) would otherwise surface minutes later as a failed
pipeline task. :func:`run` checks:

* the settings are valid (with the chosen external sites applied);
* the input exists (a local folder; for ``s3://`` the labels file is read, nothing is listed);
* ``labels.csv`` is readable and follows its contract (:func:`isnetflow.validation.parse_labels`);
* every ``--external-sites`` name is a known site: the synthetic cohort's sites, or the sites of the
  input (labels.csv's ``site`` column, else each local file's InstitutionName);
* the choice leaves at least ``validate.min_internal_images`` internal and
  ``validate.min_external_images`` external images listed in labels.csv (the ingest stage checks the
  same on the valid images after validation).

Any failure is a :class:`PreflightError` with a one-line message. Nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from isnetflow.config import Settings, ValidateConfig
from isnetflow.dicom.source import SourceError, is_s3, join, parent, read_bytes, resolve
from isnetflow.validation.labels import LabelsError, parse_labels
from isnetflow.validation.sites import SiteError, count_roles, resolve_sites, role_shortfall, split_site_list

__all__ = ["Preflight", "PreflightError", "run"]


class PreflightError(ValueError):
    """The run cannot start: one line naming the file, option or setting and the problem."""


@dataclass
class Preflight:
    """What the checks found: the resolved external sites and the sites and counts they are based on."""

    external_sites: list[str]
    known_sites: list[str]
    labels: str | None = None
    images: int | None = None
    internal_images: int | None = None
    external_images: int | None = None
    unresolved_sites: int = 0  # labels rows whose site could not be read before validation
    notes: list[str] = field(default_factory=list)


def _institution(path: Path) -> str | None:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["InstitutionName"], force=True)
        value = ds.get("InstitutionName")
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError):
        return None
    text = str(value).strip() if value is not None else ""
    return text or None


def _row_sites(
    table_paths: Sequence[str], table_sites: Sequence[object], labels_uri: str
) -> list[str | None]:
    """Each labels row's site: its ``site`` cell, else the local file's InstitutionName (None: unknown)."""
    base = parent(labels_uri)
    sites: list[str | None] = []
    for rel, site in zip(table_paths, table_sites, strict=True):
        if isinstance(site, str) and site:
            sites.append(site)
        elif not is_s3(base):
            sites.append(_institution(Path(join(base, rel))))
        else:
            sites.append(None)
    return sites


def _validate_config(settings: Settings, external: list[str]) -> ValidateConfig:
    data = settings.validate.model_dump()
    if external:
        data["external_sites"] = external
        data["internal_sites"] = [s for s in data["internal_sites"] if s not in external]
    try:
        return ValidateConfig.model_validate(data)
    except ValueError as exc:
        first = str(exc).strip().splitlines()
        raise PreflightError(f"invalid settings: {' '.join(line.strip() for line in first[:3])}") from exc


def run(
    settings: Settings,
    *,
    input_uri: str = "",
    labels_uri: str = "",
    external_sites: Sequence[str] = (),
) -> Preflight:
    """Check a local pipeline run's inputs and options before it starts (see the module docstring)."""
    if not input_uri:
        known = [s.name for s in settings.synth.sites]
        try:
            external = resolve_sites(external_sites, known)
        except SiteError as exc:
            raise PreflightError(str(exc)) from None
        _validate_config(settings, external)
        return Preflight(external_sites=external, known_sites=known)

    if not is_s3(input_uri) and not Path(input_uri).exists():
        raise PreflightError(f"{input_uri}: input folder not found")
    labels = labels_uri or join(resolve(input_uri), "labels.csv")
    try:
        data = read_bytes(resolve(labels))
    except SourceError as exc:
        reason = str(exc).split(": ", 1)[-1]
        raise PreflightError(f"{labels}: cannot read the labels file ({reason})") from None
    try:
        table = parse_labels(data, str(labels))
    except LabelsError as exc:
        raise PreflightError(str(exc)) from None
    if table.empty:
        raise PreflightError(f"{labels}: no images listed")
    row_sites = _row_sites(list(table["path"]), list(table["site"]), resolve(labels))
    known = sorted({s for s in row_sites if s})
    unresolved = sum(1 for s in row_sites if not s)
    try:
        if unresolved:
            external = _split_only(external_sites, known)
        else:
            external = resolve_sites(external_sites, known)
    except SiteError as exc:
        raise PreflightError(str(exc)) from None
    vcfg = _validate_config(settings, external)
    roles = [r if isinstance(r, str) else None for r in table["role"]]
    n_internal, n_external = count_roles(row_sites, roles, vcfg.external_sites)
    result = Preflight(
        external_sites=external,
        known_sites=known,
        labels=str(labels),
        images=len(table),
        internal_images=n_internal,
        external_images=n_external,
        unresolved_sites=unresolved,
    )
    if unresolved:
        result.notes.append(f"{unresolved} labels rows have no readable site yet: checked after validation")
        return result
    shortfall = role_shortfall(
        n_internal,
        n_external,
        vcfg.min_internal_images,
        vcfg.min_external_images,
        what=f"images in {os.path.basename(str(labels))}",
    )
    if shortfall:
        raise PreflightError(shortfall)
    return result


def _split_only(values: Sequence[str], known: Sequence[str]) -> list[str]:
    """Some sites are not known before validation (unreadable files, ``s3://`` without a site column):
    names cannot be refused yet; the ingest stage checks them against the validated data."""
    return split_site_list(values, known)
