"""The great-expectations suite on the manifest's valid rows: it passes on a sound set and names what
fails otherwise (labels outside the classes, class imbalance, leakage, small sites, nulls)."""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import pytest

from isnetflow.config import ValidateConfig
from isnetflow.validation import dataset_columns, leaking_patients, run_suite

CFG = ValidateConfig(min_images_per_site=4, min_class_fraction=0.25)


def _rows(
    site: str, n: int, role: str | None, *, start: int = 0, positives: int | None = None
) -> list[dict[str, Any]]:
    positives = n // 2 if positives is None else positives
    out = []
    for i in range(start, start + n):
        out.append(
            {
                "path": f"{site}/{i}.dcm",
                # stable across sessions (the built-in hash() changes with PYTHONHASHSEED and collides)
                "sha256": hashlib.sha256(f"{site}/{i}".encode()).hexdigest(),
                "sop_instance_uid": f"1.2.3.{int.from_bytes(site.encode(), 'big')}.{i}",
                "study_instance_uid": f"1.2.4.{i}",
                "patient_id": f"{site}-P{i}",
                "site": site,
                "role": role,
                "label": "covid" if i - start < positives else "normal",
                "image": f"images/{site}-{i}.npy",
                "modality": "DX",
                "photometric_interpretation": "MONOCHROME2",
            }
        )
    return out


@pytest.fixture
def good() -> pd.DataFrame:
    return pd.DataFrame(_rows("A", 6, "internal") + _rows("B", 4, "external"))


def _failed(outcome: Any) -> list[str]:
    return [r["description"] for r in outcome.results if not r["success"]]


def test_dataset_columns(good: pd.DataFrame) -> None:
    df = dataset_columns(good, CFG, has_labels=True)
    a, b = df[df.site == "A"].iloc[0], df[df.site == "B"].iloc[0]
    assert (a.site_n_images, b.site_n_images) == (6, 4)
    assert a.site_min_class_fraction == pytest.approx(0.5) and b.site_min_class_fraction == pytest.approx(0.5)
    assert (df.patient_n_sites == 1).all() and (df.patient_n_roles == 1).all()


def test_sound_set_passes_and_renders(good: pd.DataFrame) -> None:
    outcome = run_suite(good, CFG, has_labels=True)
    assert outcome.success, _failed(outcome)
    assert outcome.failure_summary() is None
    kinds = {r["expectation"] for r in outcome.results}
    assert {
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_unique",
        "expect_table_row_count_to_be_between",
    } <= kinds
    assert outcome.statistics["evaluated_expectations"] == len(outcome.results) >= 15
    assert "<html" in outcome.html and "isnetflow-manifest" in outcome.html  # GX data-docs page
    assert "label in {normal, covid}" in outcome.html and "each patient in one site only" in outcome.html


def test_unknown_label_fails_the_suite(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[0, "label"] = "Covid"
    outcome = run_suite(bad, CFG, has_labels=True)
    assert _failed(outcome) == ["label in {normal, covid}"]
    summary = outcome.failure_summary()
    assert summary is not None and "label in {normal, covid} (1 unexpected: Covid)" in summary
    assert "\n" not in summary


def test_class_imbalance_and_small_site_fail(good: pd.DataFrame) -> None:
    skewed = pd.DataFrame(_rows("A", 6, "internal", positives=1) + _rows("B", 3, "external"))
    outcome = run_suite(skewed, CFG.model_copy(update={"confound": "fail"}), has_labels=True)
    assert set(_failed(outcome)) == {
        "every class >= 0.25 of each site's images",
        ">= 4 valid images per site",
    }
    # by default (validate.confound: warn) the class share is a warning of the stage, not an expectation
    outcome = run_suite(skewed, CFG, has_labels=True)
    assert _failed(outcome) == [">= 4 valid images per site"]
    assert not any("every class" in r["description"] for r in outcome.results)


def test_patient_leakage_is_detected(good: pd.DataFrame) -> None:
    leak = good.copy()
    leak.loc[leak.site == "B", "patient_id"] = "A-P0"  # the same patient at an external site
    assert leaking_patients(leak) == {"A-P0": "patient A-P0 in multiple sites (A; B)"}
    outcome = run_suite(leak, CFG, has_labels=True)
    assert "each patient in one site only" in _failed(outcome)

    roles = pd.DataFrame(_rows("A", 6, "internal"))
    roles.loc[5, "role"] = "external"  # e.g. a temporal external split from labels.csv
    roles.loc[5, "patient_id"] = "A-P0"
    assert leaking_patients(roles) == {"A-P0": "patient A-P0 in both internal and external sets"}
    assert "no patient in both internal and external sets" in _failed(run_suite(roles, CFG, has_labels=True))


def test_nulls_and_duplicates_fail(good: pd.DataFrame) -> None:
    bad = good.copy()
    bad.loc[1, "patient_id"] = None
    bad.loc[2, "sop_instance_uid"] = bad.loc[3, "sop_instance_uid"]
    failed = _failed(run_suite(bad, CFG, has_labels=True))
    assert "patient_id present" in failed and "SOPInstanceUID unique" in failed


def test_without_labels_label_expectations_are_not_applied(good: pd.DataFrame) -> None:
    unlabelled = good.assign(label=None)
    outcome = run_suite(unlabelled, CFG, has_labels=False)
    assert outcome.success, _failed(outcome)
    assert not any("label" in r["description"] for r in outcome.results)


def test_empty_set_fails_on_row_count() -> None:
    empty = pd.DataFrame(columns=list(_rows("A", 1, None)[0]))
    outcome = run_suite(empty, CFG, has_labels=True)
    assert _failed(outcome) == ["at least one valid image"]
