"""Real-radiograph settings end to end on the tiny cohort (issue 26): a single-class site is a warning that
names the site/label confound (validation.json, validation.html, the run's table), or a failure with
``validate.confound: fail``; with only external sites given, every other site is internal."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from isnetflow.config import Settings, ValidateConfig
from isnetflow.reporting import render_run_summary
from isnetflow.stages import ingest
from isnetflow.validation.dataset import validate_tree
from isnetflow_kfp.pipelines.local import _confound

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

COVID_ONLY = "St Aurelia General Hospital"
HELD_OUT = "Lakeshore Regional Medical Center"
MESSAGE = (
    f"site '{COVID_ONLY}' holds only 'covid': the site and the label are confounded; "
    "a classifier can learn the site instead of the disease — the ISNet setting"
)


def _small(**updates: Any) -> ValidateConfig:
    return ValidateConfig(
        image_size=96,
        min_images_per_site=1,
        min_internal_images=1,
        min_external_images=1,
        workers=1,
        **updates,
    )


@pytest.fixture(scope="module")
def one_class_site(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort with every image of one internal site labelled covid (the ISNet papers' setting)."""
    root = tmp_path_factory.mktemp("one-class-site") / "data"
    shutil.copytree(tiny_cohort, root)
    labels = pd.read_csv(root / "labels.csv")
    labels.loc[labels["site"] == COVID_ONLY, "label"] = "covid"
    labels.to_csv(root / "labels.csv", index=False)
    return root


@pytest.fixture(scope="module")
def ingested(one_class_site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("ingest")
    settings = Settings().model_copy(update={"validate": _small()})
    return out, ingest.run(settings, out, input_uri=str(one_class_site), external_sites=[HELD_OUT])


def test_a_single_class_site_is_a_warning_naming_the_confound(ingested: tuple[Path, dict[str, Any]]) -> None:
    out, summary = ingested
    assert summary["passed"], summary["reason"]
    validation = json.loads((out / "validated" / "validation.json").read_text())
    balance = validation["class_balance"]
    assert balance["confound"] == "warn" and balance["confounded"] == {COVID_ONLY: MESSAGE}
    assert balance["sites"][COVID_ONLY]["classes"] == {"covid": 8}
    assert balance["sites"][HELD_OUT]["fractions"] == {"normal": 0.5, "covid": 0.5}
    assert validation["passed"] and validation["expectations"]["success"]
    page = (out / "validated" / "validation.html").read_text()
    assert (
        "Class balance per site" in page
        and "holds only &#x27;covid&#x27;" in page
        and "alert-warning" in page
    )

    # the run's table: one line under the data line
    data = {"valid": 48, "quarantined": 0, "validation_passed": True, "confound": _confound(validation)}
    text = render_run_summary({"data": data})
    lines = [line for line in text.splitlines() if "confound" in line]
    assert lines == [
        f"warning: site/label confound at 1 of 6 sites ('{COVID_ONLY}' only 'covid'): a classifier can learn "
        "the site instead of the disease — the ISNet setting (validate.confound: warn)"
    ]


def test_only_external_sites_given_makes_every_other_site_internal(
    ingested: tuple[Path, dict[str, Any]], tiny_cohort: Path
) -> None:
    _, summary = ingested
    info = json.loads((tiny_cohort / "cohort.json").read_text())
    every = set(info["internal_sites"]) | set(info["external_sites"])
    assert summary["external_sites"] == [HELD_OUT]
    assert summary["internal_sites"] == sorted(every - {HELD_OUT})
    data = {
        "valid": 48,
        "validation_passed": True,
        **{k: summary[k] for k in ("internal_sites", "external_sites")},
    }
    assert f"internal sites {', '.join(sorted(every - {HELD_OUT}))}; external sites {HELD_OUT}" in (
        render_run_summary({"data": data}, width=400)
    )


def test_confound_fail_makes_the_single_class_site_fail_the_validation(
    one_class_site: Path, tmp_path: Path
) -> None:
    result = validate_tree(
        _small(confound="fail"), one_class_site, tmp_path / "v", labels=one_class_site / "labels.csv"
    )
    assert not result.passed
    assert result.failure is not None and "\n" not in result.failure
    assert "every class >= 0.1 of each site's images" in result.failure  # the GX expectation
    assert (
        f"('{COVID_ONLY}' only 'covid')" in result.failure and "(validate.confound: fail)" in result.failure
    )
    assert "alert-danger" in (tmp_path / "v" / "validation.html").read_text()


def test_the_validate_command_prints_the_warning_and_exits_0(one_class_site: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from isnetflow.cli import app

    config = tmp_path / "c.yaml"
    config.write_text("validate:\n  image_size: 96\n  min_images_per_site: 1\n  workers: 1\n")
    args = ["validate", "-i", str(one_class_site), "-o", str(tmp_path / "v"), "--config", str(config)]
    result = CliRunner().invoke(app, [*args, "--labels", str(one_class_site / "labels.csv")])
    assert result.exit_code == 0, result.stderr
    assert f"warning: site/label confound at 1 of 6 sites ('{COVID_ONLY}' only 'covid')" in result.stderr
