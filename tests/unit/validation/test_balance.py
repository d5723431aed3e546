"""Class balance per site and the site/label confound (validation.balance): a single-class site is a
finding named in a warning, with the site, its only class and what it means; below-threshold sites too."""

from __future__ import annotations

import pandas as pd

from isnetflow.config import ValidateConfig
from isnetflow.validation.balance import CONSEQUENCE, balance_html, class_balance


def _valid(counts: dict[tuple[str, str | None], dict[str, int]]) -> pd.DataFrame:
    rows = [
        {"site": site, "role": role, "label": label}
        for (site, role), labels in counts.items()
        for label, n in labels.items()
        for _ in range(n)
    ]
    return pd.DataFrame(rows).astype(object)


PAPER = _valid(  # the ISNet papers' setting: each source holds one class
    {
        ("Covid Source", "internal"): {"covid": 6},
        ("Normal Source", None): {"normal": 4},
        ("Mixed", "internal"): {"covid": 5, "normal": 5},
        ("Held Out", "external"): {"normal": 3},
    }
)


def test_a_single_class_site_is_named_with_its_only_class_and_the_confound() -> None:
    b = class_balance(PAPER, ValidateConfig())
    assert b["confound"] == "warn" and b["min_class_fraction"] == 0.1
    assert b["sites"]["Mixed"] == {
        "role": "internal",
        "valid": 10,
        "classes": {"covid": 5, "normal": 5},
        "fractions": {"normal": 0.5, "covid": 0.5},
        "confounded": False,
    }
    assert b["sites"]["Covid Source"]["fractions"] == {"normal": 0.0, "covid": 1.0}
    assert list(b["confounded"]) == ["Covid Source", "Held Out", "Normal Source"]
    assert b["confounded"]["Covid Source"] == (
        "site 'Covid Source' holds only 'covid': the site and the label are confounded; "
        "a classifier can learn the site instead of the disease — the ISNet setting"
    )
    assert b["confounded"]["Held Out"].startswith("external site 'Held Out' holds only 'normal': ")
    line = b["line"]
    assert line is not None and "\n" not in line
    assert line == (
        "site/label confound at 3 of 4 sites ('Covid Source' only 'covid'; 'Held Out' only 'normal'; "
        f"'Normal Source' only 'normal'): {CONSEQUENCE} (validate.confound: warn)"
    )


def test_a_site_below_the_threshold_is_named_with_its_share() -> None:
    skewed = _valid(
        {("Skewed", "internal"): {"covid": 19, "normal": 1}, ("Even", None): {"covid": 2, "normal": 2}}
    )
    b = class_balance(skewed, ValidateConfig(min_class_fraction=0.1, confound="fail"))
    assert b["confounded"] == {
        "Skewed": "site 'Skewed' has 5% 'normal' of its 20 valid images (< validate.min_class_fraction 0.1): "
        f"the site and the label are confounded; {CONSEQUENCE}"
    }
    assert b["line"] is not None and b["line"].endswith("(validate.confound: fail)")
    assert class_balance(skewed, ValidateConfig(min_class_fraction=0.05))["line"] is None
    assert class_balance(PAPER, ValidateConfig(min_class_fraction=0))["confounded"] == {}  # 0: never


def test_the_html_shows_the_warning_and_every_site() -> None:
    page = balance_html(class_balance(PAPER, ValidateConfig()))
    assert "alert-warning" in page and page.count("holds only") == 3
    assert "site &#x27;Covid Source&#x27; holds only &#x27;covid&#x27;" in page
    assert "<td>Mixed</td><td>internal</td><td>10</td><td>5 (50%)</td><td>5 (50%)</td><td>no</td>" in page
    assert "alert-danger" in balance_html(class_balance(PAPER, ValidateConfig(confound="fail")))
    assert balance_html(None) == ""
