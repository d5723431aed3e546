"""Build an isnetflow input folder (pictures + ``labels.csv``) from two public chest X-ray collections.

    python examples/public-cxr/build_labels.py \
        --cohen PATH/covid-chestxray-dataset --openist PATH/OpenIST --out data/public-cxr

* **COVID-19 image data collection** (Cohen et al., arXiv:2006.11988; a clone of
  ieee8023/covid-chestxray-dataset or its fork hida6/covid-chestxray-dataset): the frontal (PA, AP,
  AP Supine) X-rays of ``metadata.csv``. ``COVID-19`` findings are ``covid``, ``No Finding`` is
  ``normal``; other findings (other pneumonias, ``todo``) are left out.
* **OpenIST** (pi-null-mezon/OpenIST, ``Datasets/Chest_x-ray``): normal radiographs of a teaching set
  (``normal``; the ``@.png`` lung masks are not used here: the mask stage segments every image).

Sites, one per source as the paper's setting has it (the site/label confound validation reports):

* ``Cohen web collection`` (internal): COVID-19 radiographs from journals and web cases, **except**
  Hannover Medical School and the two teaching sites eurorad and radiopaedia;
* ``OpenIST teaching set`` (internal): the normal radiographs;
* ``Hannover Medical School`` (external, ``role`` column): the collection's only hospital with both
  classes (COVID-19 and No Finding) from one site, so an external AUC means something. It is the
  *development* external set: the real external hospital that judges results is kept outside the
  project. Its images also trained the shipped lung segmenter (their masks are better than elsewhere)
  and it holds few normals: read its AUC with the confidence interval.

Licences: the collection's ``license`` column is copied into ``licenses.csv`` per image (most are CC
BY-NC-SA, CC BY or CC BY-NC-ND: non-commercial use only for many); OpenIST ships no licence file; its
images come from a public teaching module (chestx-ray.com). Do not redistribute the built folder.

Files are hard-linked into ``--out`` (copied when the clone is on another file system), so validation
reads one folder. Every source file is accounted for in ``build_report.json``: used, or left out with
the rule that left it out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

FRONTAL = {"PA", "AP", "AP Supine"}
HANNOVER = "Hannover Medical School"
INTERNAL_COHEN = "Cohen web collection"
OPENIST = "OpenIST teaching set"
LEFT_OUT_HOSTS = ("eurorad.org", "radiopaedia.org")


def _host(url: str) -> str:
    m = re.match(r"https?://(?:www\.)?([^/]+)", url or "")
    return m.group(1) if m else ""


def cohen_rows(root: Path) -> tuple[list[dict[str, str]], Counter[str]]:
    """(labels rows, counts of the rules that left images out) for the COVID-19 image data collection."""
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise SystemExit(f"error: {meta}: not found (is --cohen a clone of covid-chestxray-dataset?)")
    rows, out = [], Counter[str]()
    with meta.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            finding, view = (r.get("finding") or "").strip(), (r.get("view") or "").strip()
            image = root / (r.get("folder") or "images") / (r.get("filename") or "")
            if (r.get("modality") or "").strip() != "X-ray":
                out["not an X-ray (CT)"] += 1
                continue
            if view not in FRONTAL:
                out[f"view {view or '?'} is not frontal"] += 1
                continue
            if "COVID-19" in finding:
                label = "covid"
            elif finding == "No Finding":
                label = "normal"
            else:
                out["finding is neither COVID-19 nor No Finding"] += 1
                continue
            if not image.is_file():
                out["image file missing from the clone"] += 1
                continue
            hannover = "Hannover" in (r.get("location") or "")
            host = _host(r.get("url") or "")
            if not hannover and host in LEFT_OUT_HOSTS:
                out[f"teaching site {host}"] += 1
                continue
            if not hannover and label == "normal":
                out["a normal outside Hannover (its class would not follow its site)"] += 1
                continue
            rows.append(
                {
                    "source": str(image),
                    "path": f"cohen/{image.name}",
                    "label": label,
                    "patient_id": f"cohen-{(r.get('patientid') or '').strip()}",
                    "site": HANNOVER if hannover else INTERNAL_COHEN,
                    "role": "external" if hannover else "internal",
                    "license": (r.get("license") or "").strip() or "unknown",
                }
            )
    return rows, out


def openist_rows(root: Path) -> list[dict[str, str]]:
    """Labels rows for the OpenIST normal radiographs (one patient per image: the set names none)."""
    folder = root / "Datasets" / "Chest_x-ray" if (root / "Datasets").is_dir() else root
    files = sorted(f for f in folder.glob("*.jpg") if not f.stem.endswith("@"))
    if not files:
        raise SystemExit(f"error: {folder}: no .jpg radiographs (is --openist a clone of OpenIST?)")
    return [
        {
            "source": str(f),
            "path": f"openist/{f.name}",
            "label": "normal",
            "patient_id": f"openist-{f.stem}",
            "site": OPENIST,
            "role": "internal",
            "license": "no licence file (public teaching module)",
        }
        for f in files
    ]


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build(cohen: Path, openist: Path, out: Path) -> dict[str, object]:
    """Write ``out/labels.csv``, ``out/licenses.csv``, ``out/build_report.json`` and the pictures."""
    rows, left_out = cohen_rows(cohen)
    rows += openist_rows(openist)
    out.mkdir(parents=True, exist_ok=True)
    for r in rows:
        _place(Path(r["source"]), out / r["path"])
    with (out / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient_id", "site", "role"])
        w.writerows([r["path"], r["label"], r["patient_id"], r["site"], r["role"]] for r in rows)
    with (out / "licenses.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "source", "license"])
        w.writerows([r["path"], r["source"], r["license"]] for r in rows)
    counts = Counter((r["site"], r["label"]) for r in rows)
    report = {
        "images": len(rows),
        "per_site_and_label": {f"{s} / {lab}": n for (s, lab), n in sorted(counts.items())},
        "left_out": dict(left_out.most_common()),
        "external_sites": [HANNOVER],
    }
    (out / "build_report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohen", type=Path, required=True, help="clone of covid-chestxray-dataset")
    p.add_argument("--openist", type=Path, required=True, help="clone of pi-null-mezon/OpenIST")
    p.add_argument("--out", type=Path, required=True, help="folder to build (input of isnetflow)")
    args = p.parse_args(argv)
    report = build(args.cohen, args.openist, args.out)
    print(json.dumps(report, indent=2))
    print(
        f"next: isnetflow bench seeds --seeds 0-2 --input {args.out} --external-sites '{HANNOVER}'",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
