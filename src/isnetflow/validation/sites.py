"""Site choices: which hospitals are held out as external, and whether a choice leaves enough images.

``--external-sites`` takes a site name per option (repeatable) or a comma-separated list. A value that
is exactly a known site name is kept whole, so a name with a comma in it works when given on its own.
A name that matches no site is an error listing the known sites, before anything runs; so is a choice
that leaves fewer internal or external images than ``validate.min_internal_images`` /
``validate.min_external_images``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

__all__ = ["SiteError", "count_roles", "resolve_sites", "role_shortfall", "split_site_list", "unknown_sites"]


class SiteError(ValueError):
    """An unknown site name or a site choice that leaves too few images (one line)."""


def split_site_list(values: Iterable[str], known: Collection[str] = ()) -> list[str]:
    """Site names from repeated options and/or comma-separated lists, in order, without duplicates.

    A value equal to a ``known`` site name is one name even when it contains a comma.
    """
    names: list[str] = []
    for value in values:
        value = value.strip()
        parts = [value] if value in known else [p.strip() for p in value.split(",")]
        names += [p for p in parts if p and p not in names]
    return names


def unknown_sites(unknown: Sequence[str], known: Collection[str], *, option: str = "--external-sites") -> str:
    """The one-line error for site names that are not among ``known``."""
    msg = (
        f"{option}: unknown site{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}; "
        f"known sites: {', '.join(repr(k) for k in sorted(known)) or '(none)'}"
    )
    if any("," in k for k in known):
        msg += f" (a site name with a comma must be given whole, one per {option} option)"
    return msg


def resolve_sites(
    values: Iterable[str], known: Collection[str], *, option: str = "--external-sites"
) -> list[str]:
    """:func:`split_site_list`, then every name must be one of ``known`` (else :class:`SiteError`)."""
    names = split_site_list(values, known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SiteError(unknown_sites(unknown, known, option=option))
    return names


def count_roles(
    sites: Sequence[str | None], roles: Sequence[str | None], external: Collection[str]
) -> tuple[int, int]:
    """(internal, external) image counts: a row's own role wins, else its site's; no role = internal
    (as training treats it)."""
    n_external = sum(
        1
        for site, role in zip(sites, roles, strict=True)
        if role == "external" or (role not in ("internal", "external") and site in external)
    )
    return len(sites) - n_external, n_external


def role_shortfall(
    n_internal: int, n_external: int, min_internal: int, min_external: int, *, what: str = "images"
) -> str | None:
    """One line when a count is below its minimum (``validate.min_internal_images`` /
    ``validate.min_external_images``), else None."""
    problems = []
    if n_internal < min_internal:
        problems.append(f"{n_internal} internal {what} (validate.min_internal_images: {min_internal})")
    if n_external < min_external:
        problems.append(f"{n_external} external {what} (validate.min_external_images: {min_external})")
    if not problems:
        return None
    return "the site choice leaves only " + " and ".join(problems) + "; choose other --external-sites"
