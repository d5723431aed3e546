"""Class balance per site, and the site/label confound it reveals.

A site whose valid images hold (nearly) one class confounds the site with the label: a classifier can
learn the site (its scanner, processing, burned-in text) instead of the disease. That is the setting the
ISNet was made for (in its papers each public source gives one class), so it is a finding to report,
not a defect of the files. The validate stage reports every site's class balance in validation.json
(``class_balance``) and validation.html; a site where a class of ``validate.classes`` has a share of
the site's valid images below ``validate.min_class_fraction`` is named, with its role, in a warning
(``validate.confound: warn``, the default) or fails the validation (``fail``: then the
great-expectations suite holds the class-share expectation, :mod:`isnetflow.validation.suite`).
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from isnetflow.config import ValidateConfig

__all__ = ["CONSEQUENCE", "balance_html", "class_balance"]

#: What a confounded site means, in every message that names one.
CONSEQUENCE = "a classifier can learn the site instead of the disease — the ISNet setting"

_UNKNOWN_SITE = "(unknown)"


def _role(roles: pd.Series) -> str | None:
    found = sorted({str(r) for r in roles.dropna() if r})
    return found[0] if len(found) == 1 else ("mixed" if found else None)


def _site_message(
    site: str, role: str | None, counts: dict[str, int], fractions: dict[str, float], cfg: ValidateConfig
) -> tuple[str, str]:
    """(full message, short form for the one-line summary) for a site below the threshold."""
    present = [c for c in cfg.classes if counts.get(c, 0)]
    where = f"{'external ' if role == 'external' else ''}site {site!r}"
    if len(present) == 1:
        return f"{where} holds only {present[0]!r}", f"{site!r} only {present[0]!r}"
    low = [c for c in cfg.classes if fractions[c] < cfg.min_class_fraction]
    n = sum(counts.values())
    parts = [f"no {c!r}" if not counts.get(c, 0) else f"{fractions[c]:.0%} {c!r}" for c in low]
    threshold = f"< validate.min_class_fraction {cfg.min_class_fraction:g}"
    return (
        f"{where} has {', '.join(parts)} of its {n} valid images ({threshold})",
        f"{site!r} {', '.join(parts)}",
    )


def class_balance(valid: pd.DataFrame, cfg: ValidateConfig) -> dict[str, Any]:
    """Per-site class balance of the valid (labelled) rows and the confounded sites.

    Returns ``{"min_class_fraction", "confound", "sites": {site: {"role", "valid", "classes",
    "fractions", "confounded"}}, "confounded": {site: message}, "line": str | None}``: ``classes`` counts
    the labels, ``fractions`` gives each class of ``cfg.classes`` as a share of the site's valid images,
    ``line`` is one line naming every confounded site (None when there is none).
    """
    sites: dict[str, Any] = {}
    messages: dict[str, str] = {}
    short: list[str] = []
    if len(valid):
        site_of = valid["site"].fillna(_UNKNOWN_SITE).astype(str)
        for site, g in valid.groupby(site_of, sort=True):
            name = str(site)
            labels = g["label"].dropna().astype(str)
            counts = {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}
            fractions = {c: round(counts.get(c, 0) / len(g), 4) for c in cfg.classes}
            role = _role(g["role"])
            confounded = bool(counts) and min(fractions.values()) < cfg.min_class_fraction
            sites[name] = {
                "role": role,
                "valid": len(g),
                "classes": counts,
                "fractions": fractions,
                "confounded": confounded,
            }
            if confounded:
                message, brief = _site_message(name, role, counts, fractions, cfg)
                messages[name] = f"{message}: the site and the label are confounded; {CONSEQUENCE}"
                short.append(brief)
    line = None
    if messages:
        line = (
            f"site/label confound at {len(messages)} of {len(sites)} site{'s' if len(sites) > 1 else ''} "
            f"({'; '.join(short)}): {CONSEQUENCE} (validate.confound: {cfg.confound})"
        )
    return {
        "min_class_fraction": cfg.min_class_fraction,
        "confound": cfg.confound,
        "sites": sites,
        "confounded": messages,
        "line": line,
    }


def balance_html(balance: dict[str, Any] | None) -> str:
    """The class balance per site, after a warning (or failure) box naming each confounded site."""
    if not balance:
        return ""
    fail = balance["confound"] == "fail"
    box = "".join(
        f"<div class='alert alert-{'danger' if fail else 'warning'}'><b>{'Failure' if fail else 'Warning'}: "
        f"{html.escape(message)}</b></div>"
        for message in balance["confounded"].values()
    )
    first: dict[str, Any] = next(iter(balance["sites"].values()), {})
    classes = list(first.get("fractions", {}))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["site", "role", "valid", *classes, "confounded"])
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in [
                site,
                s["role"] or "-",
                s["valid"],
                *(f"{s['classes'].get(c, 0)} ({s['fractions'][c]:.0%})" for c in classes),
                "yes" if s["confounded"] else "no",
            ]
        )
        + "</tr>"
        for site, s in balance["sites"].items()
    )
    return (
        f"<h4>Class balance per site (validate.min_class_fraction {balance['min_class_fraction']:g}, "
        f"validate.confound: {html.escape(balance['confound'])})</h4>{box}"
        f"<table class='table table-sm'><tr>{head}</tr>{body}</table>"
    )
