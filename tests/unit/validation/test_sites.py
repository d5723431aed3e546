"""Site choices: repeated or comma-separated names, unknown names refused with the known ones listed."""

from __future__ import annotations

import pytest

from isnetflow.validation.sites import SiteError, count_roles, resolve_sites, role_shortfall, split_site_list

KNOWN = ["Site A", "Site B", "Site C, Inc"]


def test_repeated_and_comma_separated_forms_agree() -> None:
    assert split_site_list(["Site A,Site B"]) == ["Site A", "Site B"]
    assert split_site_list(["Site A", "Site B"]) == ["Site A", "Site B"]
    assert split_site_list([" Site A , Site B ,", "Site A"]) == ["Site A", "Site B"]  # stripped, once each
    assert resolve_sites(["Site A,Site B"], KNOWN) == resolve_sites(["Site A", "Site B"], KNOWN)


def test_a_known_name_with_a_comma_is_kept_whole() -> None:
    assert resolve_sites(["Site C, Inc"], KNOWN) == ["Site C, Inc"]
    assert resolve_sites(["Site A", "Site C, Inc"], KNOWN) == ["Site A", "Site C, Inc"]


def test_unknown_names_list_the_known_sites() -> None:
    with pytest.raises(SiteError) as info:
        resolve_sites(["Nowhere"], ["Site A", "Site B"])
    assert str(info.value) == "--external-sites: unknown site 'Nowhere'; known sites: 'Site A', 'Site B'"
    # a comma-named site split by a list: the error says to give it whole, as its own option
    with pytest.raises(
        SiteError, match=r"unknown sites 'Site C', 'Inc'.*given whole, one per --external-sites"
    ):
        resolve_sites(["Site A,Site C, Inc"], KNOWN)


def test_role_counts_and_minimums() -> None:
    sites = ["Site A", "Site A", "Site B", None]
    assert count_roles(sites, [None, None, None, None], {"Site B"}) == (3, 1)
    assert count_roles(sites, ["external", None, "internal", None], {"Site B"}) == (3, 1)  # own role wins
    assert role_shortfall(3, 1, 2, 1) is None
    msg = role_shortfall(3, 0, 20, 1, what="valid images")
    assert msg == (
        "the site choice leaves only 3 internal valid images (validate.min_internal_images: 20) and "
        "0 external valid images (validate.min_external_images: 1); choose other --external-sites"
    )
