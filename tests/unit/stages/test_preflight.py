"""``isnetflow run`` checks its inputs before the pipeline starts: one line, exit status 2, seconds.

The ingest stage makes the same site checks on the validated data, so a pipeline started elsewhere
(``isnetflow submit``) stops before training too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from isnetflow.config import Settings
from isnetflow.stages import ingest, preflight

REPO = Path(__file__).resolve().parents[3]
EXTERNAL = ["Lakeshore Regional Medical Center", "Mount Verity Clinic", "Harbor Point Hospital"]


def _cli(*args: str, cwd: Path) -> tuple[int, list[str], float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "isnetflow.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120"},
    )
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return proc.returncode, lines, time.perf_counter() - t0


def test_a_missing_input_is_one_line_in_seconds(tmp_path: Path) -> None:
    code, lines, seconds = _cli("--input", "/nonexistent", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert code == 2 and lines == ["error: /nonexistent: input folder not found"], lines
    assert seconds < 30 and not (tmp_path / "w").exists()  # nothing started


def test_an_unknown_site_fails_before_any_training(tmp_path: Path) -> None:
    code, lines, seconds = _cli("--external-sites", "Nowhere", "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert code == 2 and len(lines) == 1 and seconds < 30, lines
    assert lines[0].startswith("error: --external-sites: unknown site 'Nowhere'; known sites: ")
    assert "'Lakeshore Regional Medical Center'" in lines[0] and not (tmp_path / "w").exists()


def _input(synth_cohort: Path, root: Path, *, site_column: bool = True) -> Path:
    shutil.copytree(synth_cohort / "dicom", root)
    labels = pd.read_csv(synth_cohort / "labels.csv")
    labels["path"] = labels["path"].str.removeprefix("dicom/")
    if not site_column:  # sites then come from each file's InstitutionName
        labels = labels.drop(columns=["site"])
    labels.to_csv(root / "labels.csv", index=False)
    return root


def test_site_lists_from_labels_or_dicom_headers(synth_cohort: Path, tmp_path: Path) -> None:
    s = Settings()
    for root in (
        _input(synth_cohort, tmp_path / "a"),
        _input(synth_cohort, tmp_path / "b", site_column=False),
    ):
        got = preflight.run(s, input_uri=str(root), external_sites=[",".join(EXTERNAL[:2]), EXTERNAL[2]])
        assert got.external_sites == EXTERNAL and got.unresolved_sites == 0
        assert got.images == 60 and got.internal_images + got.external_images == 60  # type: ignore[operator]
        assert "St Aurelia General Hospital" in got.known_sites
        with pytest.raises(preflight.PreflightError, match=r"unknown site 'Nowhere'; known sites: 'Harbor"):
            preflight.run(s, input_uri=str(root), external_sites=["Nowhere"])


def test_bad_labels_settings_and_too_few_images(synth_cohort: Path, tmp_path: Path) -> None:
    root = _input(synth_cohort, tmp_path / "in")
    s = Settings()
    strict = s.model_copy(update={"validate": s.validate.model_copy(update={"min_external_images": 15})})
    assert preflight.run(strict, input_uri=str(root), external_sites=EXTERNAL[:2]).external_images == 20
    with pytest.raises(preflight.PreflightError) as info:  # 10 images there
        preflight.run(strict, input_uri=str(root), external_sites=["Mount Verity Clinic"])
    assert str(info.value) == (
        "the site choice leaves only 10 external images in labels.csv (validate.min_external_images: 15); "
        "choose other --external-sites"
    )
    few = s.model_copy(update={"validate": s.validate.model_copy(update={"min_external_images": 0})})
    assert preflight.run(few, input_uri=str(root)).external_images == 0  # allowed when asked for
    with pytest.raises(preflight.PreflightError, match=r"leaves only 0 external images in labels\.csv"):
        preflight.run(s, input_uri=str(root))  # no external site: nothing to evaluate on
    both = s.model_copy(
        update={"validate": s.validate.model_copy(update={"internal_sites": ["A"], "external_sites": []})}
    )
    assert preflight.run(both, input_uri=str(root), external_sites=EXTERNAL).external_sites == EXTERNAL
    (root / "labels.csv").write_text("file,diagnosis\na.dcm,covid\n")
    with pytest.raises(preflight.PreflightError, match=r"labels\.csv: unknown column layout file,diagnosis"):
        preflight.run(s, input_uri=str(root))
    (root / "labels.csv").unlink()
    with pytest.raises(
        preflight.PreflightError, match=r"labels\.csv: cannot read the labels file \(not found\)"
    ):
        preflight.run(s, input_uri=str(root))


def test_ingest_refuses_an_external_site_missing_from_the_data(synth_cohort: Path, tmp_path: Path) -> None:
    root = _input(synth_cohort, tmp_path / "in")
    s = Settings()
    s = s.model_copy(update={"validate": s.validate.model_copy(update={"image_size": 32, "workers": 1})})
    # a remote run (no preflight) given a list as one name: the pipeline stops before training
    summary = ingest.run(s, tmp_path / "a", input_uri=str(root), external_sites=[",".join(EXTERNAL)])
    assert not summary["passed"], summary["reason"]
    assert summary["reason"].startswith("external sites: unknown site 'Lakeshore Regional Medical Center,")
    assert json.loads((tmp_path / "a" / "ingest.json").read_text())["passed"] is False
    ok = ingest.run(s, tmp_path / "b", input_uri=str(root), external_sites=EXTERNAL)
    assert ok["passed"] and ok["external_sites"] == EXTERNAL, ok["reason"]
    strict = s.model_copy(update={"validate": s.validate.model_copy(update={"min_external_images": 15})})
    one = ingest.run(strict, tmp_path / "c", input_uri=str(root), external_sites=["Mount Verity Clinic"])
    assert not one["passed"] and one["reason"] == (
        "the site choice leaves only 10 external valid images (validate.min_external_images: 15); "
        "choose other --external-sites"
    )


def test_the_synthetic_cohort_takes_the_chosen_external_sites(tmp_path: Path) -> None:
    s = Settings()
    s = s.model_copy(
        update={
            "synth": s.synth.model_copy(update={"n": 48, "size": 64, "workers": 1}),
            "validate": s.validate.model_copy(
                update={"image_size": 32, "workers": 1, "min_images_per_site": 1, "min_external_images": 1}
            ),
        }
    )
    got = ingest.run(s, tmp_path, external_sites=["Lakeshore Regional Medical Center,Mount Verity Clinic"])
    assert got["external_sites"] == EXTERNAL[:2] and "Harbor Point Hospital" in got["internal_sites"]
    roles = pd.read_csv(tmp_path / "validated" / "manifest.csv").groupby("site")["role"].first()
    assert roles["Harbor Point Hospital"] == "internal" and roles["Mount Verity Clinic"] == "external"
