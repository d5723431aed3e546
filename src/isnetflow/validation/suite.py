"""Dataset-level expectations on the manifest's valid rows, with great-expectations (GX Core 1.x).

Per-file problems are quarantined by the validate stage; what is left here are properties of the
*set* of training images that no single file can violate on its own:

* label values in the configured class set, no nulls in key columns, unique SOPInstanceUIDs;
* class balance per site (``site_min_class_fraction``: the smallest class share at the row's site),
  only with ``validate.confound: fail`` (by default a confounded site is a warning:
  :mod:`isnetflow.validation.balance`);
* patient leakage (``patient_n_sites``, ``patient_n_roles``: sites / internal-external roles a patient
  appears in: must be 1);
* minimum images per site (``site_n_images``).

GX cannot group by site or patient, so :func:`dataset_columns` computes those per-row columns first
and plain GX column expectations check them. The validation result is rendered to HTML with GX's own
data-docs renderer.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from isnetflow.config import ValidateConfig

__all__ = [
    "KEY_COLUMNS",
    "SuiteOutcome",
    "dataset_columns",
    "leaking_patients",
    "run_suite",
]

KEY_COLUMNS = ("path", "sha256", "sop_instance_uid", "study_instance_uid", "patient_id", "site", "image")
SUITE_NAME = "isnetflow-manifest"
log = logging.getLogger(__name__)


def dataset_columns(valid: pd.DataFrame, cfg: ValidateConfig, *, has_labels: bool) -> pd.DataFrame:
    """Add the per-row aggregates the expectations check (a copy; ``valid`` = the valid rows)."""
    df = valid.copy()
    site = df["site"].fillna("")
    df["site_n_images"] = (
        site.map(site.value_counts()).astype("int64") if len(df) else pd.Series(dtype="int64")
    )
    if has_labels and len(df):
        shares = pd.crosstab(site, df["label"].fillna(""), normalize="index")
        shares = shares.reindex(columns=cfg.classes, fill_value=0.0)
        df["site_min_class_fraction"] = site.map(shares.min(axis=1)).astype(float)
    else:
        df["site_min_class_fraction"] = pd.Series(dtype=float) if not len(df) else None
    pid = df["patient_id"].fillna("")
    df["patient_n_sites"] = (
        pid.map(df.groupby(pid)["site"].nunique()).astype("int64") if len(df) else pd.Series(dtype="int64")
    )
    roles = df["role"].where(df["role"].fillna("") != "")
    df["patient_n_roles"] = (
        pid.map(roles.groupby(pid).nunique()).fillna(0).astype("int64")
        if len(df)
        else pd.Series(dtype="int64")
    )
    return df


def leaking_patients(valid: pd.DataFrame) -> dict[str, str]:
    """Patients seen in more than one site or in both roles -> a one-line description of the leak."""
    out: dict[str, str] = {}
    if not len(valid):
        return out
    df = valid[valid["patient_id"].notna()]
    if not len(df):
        return out
    # vectorized screen: only patients with more than one site or role are looked at one by one
    patients = df["patient_id"]
    n_sites = df["site"].groupby(patients).nunique()
    n_roles = df["role"].where(df["role"].fillna("") != "").groupby(patients).nunique()
    suspects = set(n_sites.index[n_sites > 1]) | set(n_roles.index[n_roles > 1])
    if not suspects:
        return out
    for pid, g in df[patients.isin(suspects)].groupby("patient_id", sort=True):
        sites = sorted(s for s in g["site"].dropna().unique())
        roles = sorted(r for r in g["role"].dropna().unique() if r)
        if len(sites) > 1:
            out[str(pid)] = f"patient {pid} in multiple sites ({'; '.join(sites)})"
        elif len(roles) > 1:
            out[str(pid)] = f"patient {pid} in both internal and external sets"
    return out


@dataclass
class SuiteOutcome:
    """The GX validation result, condensed (``results``) and rendered (``html``)."""

    success: bool
    statistics: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    html: str = ""

    def failure_summary(self) -> str | None:
        """One line naming the failed expectations, or None when all passed."""
        failed = [r for r in self.results if not r["success"]]
        if not failed:
            return None
        parts = []
        for r in failed:
            detail = r.get("error") or (
                f"{r['unexpected_count']} unexpected" + (f": {r['examples']}" if r.get("examples") else "")
                if r.get("unexpected_count") is not None
                else f"observed {r.get('observed')}"
            )
            parts.append(f"{r['description']} ({detail})")
        return "expectations failed: " + "; ".join(parts)


def _expectations(cfg: ValidateConfig, *, has_labels: bool) -> list[Any]:
    import great_expectations as gx

    E = gx.expectations
    exps: list[Any] = [
        E.ExpectTableRowCountToBeBetween(min_value=1, description="at least one valid image"),
    ]
    for col in (*KEY_COLUMNS, *(("label",) if has_labels else ())):
        exps.append(E.ExpectColumnValuesToNotBeNull(column=col, description=f"{col} present"))
    exps.append(
        E.ExpectColumnValuesToBeUnique(column="sop_instance_uid", description="SOPInstanceUID unique")
    )
    exps.append(E.ExpectColumnValuesToBeUnique(column="image", description="one normalized image per row"))
    if has_labels:
        exps.append(
            E.ExpectColumnValuesToBeInSet(
                column="label",
                value_set=list(cfg.classes),
                description=f"label in {{{', '.join(cfg.classes)}}}",
            )
        )
    if has_labels and cfg.confound == "fail":  # else a warning (isnetflow.validation.balance)
        exps.append(
            E.ExpectColumnValuesToBeBetween(
                column="site_min_class_fraction",
                min_value=cfg.min_class_fraction,
                max_value=1.0,
                description=f"every class >= {cfg.min_class_fraction:g} of each site's images",
            )
        )
    exps += [
        E.ExpectColumnValuesToBeBetween(
            column="site_n_images",
            min_value=cfg.min_images_per_site,
            description=f">= {cfg.min_images_per_site} valid images per site",
        ),
        E.ExpectColumnValuesToBeBetween(
            column="patient_n_sites", min_value=1, max_value=1, description="each patient in one site only"
        ),
        E.ExpectColumnValuesToBeBetween(
            column="patient_n_roles",
            min_value=0,
            max_value=1,
            description="no patient in both internal and external sets",
        ),
        E.ExpectColumnValuesToBeInSet(
            column="modality", value_set=list(cfg.modalities), description="modality accepted"
        ),
        E.ExpectColumnValuesToBeInSet(
            column="photometric_interpretation",
            value_set=list(cfg.photometric),
            description="photometric interpretation accepted",
        ),
    ]
    return exps


def _condense(result: Any) -> dict[str, Any]:
    cfg = result.expectation_config
    kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
    res = result.result or {}
    out: dict[str, Any] = {
        "expectation": cfg.type,
        "description": cfg.description or cfg.type,
        "kwargs": kwargs,
        "success": bool(result.success),
    }
    if "unexpected_count" in res:
        out["unexpected_count"] = int(res["unexpected_count"])
        examples = [str(v) for v in (res.get("partial_unexpected_list") or [])[:5]]
        out["examples"] = ", ".join(dict.fromkeys(examples))
    if "observed_value" in res:
        out["observed"] = res["observed_value"]
    if result.exception_info and result.exception_info.get("raised_exception"):
        out["error"] = str(result.exception_info.get("exception_message") or "exception")[:200]
    return out


@functools.cache
def _page_view() -> Any:
    """GX's HTML page view; one per process, so its Jinja templates are compiled once, not per run."""
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView()


@contextlib.contextmanager
def _no_tqdm_monitor() -> Iterator[None]:
    """GX creates (disabled) tqdm bars; tqdm then starts a monitor thread that outlives the run, and a
    later validate run in this process would see it and start its workers the slow way (forkserver,
    see ``isnetflow.validation.dataset._pool_context``). ``monitor_interval = 0`` is tqdm's documented
    switch for that thread; it is restored afterwards."""
    from tqdm import std

    saved = std.tqdm.monitor_interval
    std.tqdm.monitor_interval = 0
    try:
        yield
    finally:
        std.tqdm.monitor_interval = saved


def run_suite(valid: pd.DataFrame, cfg: ValidateConfig, *, has_labels: bool) -> SuiteOutcome:
    """Validate the valid rows (with :func:`dataset_columns` added) against the expectation suite.

    Uses an ephemeral GX context and a pandas datasource; nothing is written by GX itself.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:
        gx_log.setLevel(logging.WARNING)  # GX logs hundreds of INFO lines at import
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.render.renderer import ValidationResultsPageRenderer

    # this GX module pins its logger to INFO and announces a temporary docs directory on every context
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    df = dataset_columns(valid, cfg, has_labels=has_labels).reset_index(drop=True)
    with _no_tqdm_monitor():
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        batch_def = (
            context.data_sources.add_pandas("manifest")
            .add_dataframe_asset("valid_rows")
            .add_batch_definition_whole_dataframe("all")
        )
        suite = context.suites.add(
            gx.ExpectationSuite(name=SUITE_NAME, expectations=_expectations(cfg, has_labels=has_labels))
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="manifest-valid-rows", data=batch_def, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    condensed = [_condense(r) for r in result.results]
    try:
        document = ValidationResultsPageRenderer().render(result)
        html = _page_view().render(document)
    except Exception as exc:  # rendering is a report, never a reason to lose the validation itself
        log.warning("could not render the GX validation result to HTML: %s", exc)
        html = ""
    return SuiteOutcome(
        success=bool(result.success),
        statistics=dict(result.statistics),
        results=condensed,
        html=html,
    )
