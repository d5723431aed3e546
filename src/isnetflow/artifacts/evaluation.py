"""``evaluation.json``: the evaluation of one classifier (:class:`EvaluationReport`).

Built by the evaluation (:func:`isnetflow.evaluation.core.evaluate_model` computes the metrics, the
evaluate stage adds the model, data, settings and figures) and written by the evaluate stage; read by
the promote stage and its gates (:mod:`isnetflow.evaluation.gates`), the pipeline tasks and the local
run's summary. The layout is described in :mod:`isnetflow.evaluation.core`; a value's dotted path
(:mod:`isnetflow.evaluation.keys`) is its MLflow metric key.

What is typed: every section and value the gates, tags, tasks and summaries read, and the metrics of
every split and site. What stays untyped: ``config`` (the :class:`~isnetflow.config.EvaluateConfig` the
evaluation ran with, as written: a mapping, since files of older versions use that version's keys), and
any key this version does not know, kept as it was read. A number that the evaluation could not compute
(NaN: a single-class set) is ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from isnetflow.artifacts import Artifact, ArtifactError, finite

__all__ = [
    "EVALUATION_FILE",
    "AuditResults",
    "BackgroundShareAudit",
    "ClassificationCurves",
    "ConfusionMatrix",
    "CounterfactualAudit",
    "CounterfactualSite",
    "EvaluatedModel",
    "EvaluationData",
    "EvaluationReport",
    "Gap",
    "RocCurve",
    "SetMetrics",
    "SiteMetrics",
    "ThresholdChoice",
]

#: the file the evaluate stage writes (and the promote stage reads)
EVALUATION_FILE = "evaluation.json"


class EvaluatedModel(Artifact):
    """The evaluated model (``model``): its URI, training run, mode, network, resolution and classes."""

    uri: str | None = None
    run_id: str | None = None
    mode: str | None = None
    architecture: str | None = None
    image_size: int | None = None
    classes: list[str] | None = None
    #: how an image is scored, e.g. ``1 - P(normal)``
    score: str | None = None


class EvaluationData(Artifact):
    """The data it was evaluated on (``data``) and the split it used."""

    validated: str | None = None
    masks: str | None = None
    manifest_sha256: str | None = None
    data_fingerprint: str | None = None
    n_images: int | None = None
    splits: dict[str, int] | None = None
    split_recomputed: bool | None = None
    splits_file: str | None = None
    splits_sha256: str | None = None
    split_seed: int | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    split_source: str | None = None


class ThresholdChoice(Artifact):
    """The operating threshold on the positive score (``threshold``) and how it was chosen."""

    value: float | None = None
    method: str | None = None
    n: int | None = None


class SetMetrics(Artifact):
    """The metrics of one image set (a split set under ``splits``), at the threshold; ``None`` where
    undefined (:class:`isnetflow.evaluation.metrics.BinaryMetrics`), and its AUC's bootstrap CI."""

    n: int | None = None
    n_positive: int | None = None
    auc: float | None = None
    f1: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    balanced_accuracy: float | None = None
    brier: float | None = None
    ece: float | None = None
    threshold: float | None = None
    n_patients: int | None = None
    auc_ci_low: float | None = None
    auc_ci_high: float | None = None
    auc_ci_level: float | None = None
    auc_ci_replicates: int | None = None


class _SiteRole(Artifact):
    """A site's role and the split its images come from (listed before its metrics)."""

    role: str | None = None
    split: str | None = None


class SiteMetrics(SetMetrics, _SiteRole):
    """One site (``sites.<name>``): ``role`` internal | external, ``split`` test | external, its metrics."""


class Gap(Artifact):
    """``gap``: internal test AUC minus pooled external AUC."""

    internal_minus_external_auc: float | None = None


class RocCurve(Artifact):
    """ROC points (at most 200) for a kfp ClassificationMetrics output."""

    fpr: list[float] | None = None
    tpr: list[float] | None = None
    thresholds: list[float] | None = None


class ConfusionMatrix(Artifact):
    """``[[tn, fp], [fn, tp]]`` with its two category names (negative first)."""

    categories: list[str] | None = None
    matrix: list[list[int]] | None = None


class ClassificationCurves(Artifact):
    """``classification_metrics.<split>``: what a kfp ClassificationMetrics output shows."""

    roc: RocCurve | None = None
    confusion_matrix: ConfusionMatrix | None = None


class BackgroundShareAudit(Artifact):
    """``audit.background_share``: the mean share of positive relevance outside the lungs (zennit)."""

    pooled: float | None = None
    internal: float | None = None
    external: float | None = None
    per_site: dict[str, float | None] | None = None
    #: the mean share of the image outside the lungs (what an even spread of relevance would score)
    background_area: float | None = None
    n_images: int | None = None
    composite: str | None = None
    canonizer: str | None = None
    target: str | None = None


class CounterfactualSite(Artifact):
    """One site's part of the counterfactual background swap."""

    flip_rate: float | None = None
    mean_abs_score_change: float | None = None
    n_pairs: int | None = None


class CounterfactualAudit(Artifact):
    """``audit.counterfactual``: decisions flipped and scores changed by swapping the background."""

    flip_rate: float | None = None
    mean_abs_score_change: float | None = None
    n_pairs: int | None = None
    threshold: float | None = None
    pairing: str | None = None
    construction: str | None = None
    per_site: dict[str, CounterfactualSite] | None = None


class AuditResults(Artifact):
    """``audit``: the shortcut audit (absent when the evaluation ran without it)."""

    background_share: BackgroundShareAudit | None = None
    counterfactual: CounterfactualAudit | None = None


class EvaluationReport(Artifact):
    """One model's ``evaluation.json`` (fields in the order the file lists them)."""

    TITLE: ClassVar[str] = "the evaluation"

    schema_version: int | None = None
    generator: str | None = None
    model: EvaluatedModel | None = None
    data: EvaluationData | None = None
    threshold: ThresholdChoice | None = None
    #: ``internal_val``, ``internal_test``, ``external_pooled``
    splits: dict[str, SetMetrics] | None = None
    sites: dict[str, SiteMetrics] | None = None
    evaluated_sites: list[str] | None = None
    gap: Gap | None = None
    classification_metrics: dict[str, ClassificationCurves] | None = None
    audit: AuditResults | None = None
    wall_seconds: float | None = None
    #: the evaluation settings as written (untyped: see the module docstring)
    config: dict[str, Any] | None = None
    #: figure name -> path inside the evaluation folder
    figures: dict[str, str] | None = None
    #: the evaluate stage's MLflow run (tracked evaluations)
    evaluation_run_id: str | None = None

    @classmethod
    def read_from(cls, path_or_dir: str | Path) -> EvaluationReport:
        """The evaluation in a file or in a folder's :data:`EVALUATION_FILE`; a file that holds no
        ``splits`` is not an evaluation (:class:`~isnetflow.artifacts.ArtifactError`)."""
        p = Path(path_or_dir)
        if p.is_dir():
            p = p / EVALUATION_FILE
        report = cls.read(p)
        if report.splits is None:
            raise ArtifactError(f"{p}: not an isnetflow evaluation (no 'splits')")
        return report

    def write_to(self, folder: str | Path) -> Path:
        """Write it into ``folder`` as :data:`EVALUATION_FILE`; returns the path."""
        return self.write(Path(folder) / EVALUATION_FILE)

    # ---- the values the gates, tags and summaries read

    def split(self, name: str) -> SetMetrics:
        """The metrics of split set ``name`` (empty when not evaluated)."""
        return (self.splits or {}).get(name) or SetMetrics()

    @property
    def internal_test(self) -> SetMetrics:
        """The internal test split's metrics."""
        return self.split("internal_test")

    @property
    def external_pooled(self) -> SetMetrics:
        """The pooled external sites' metrics."""
        return self.split("external_pooled")

    @property
    def mode(self) -> str | None:
        """The evaluated model's mode (isnet | standard), when recorded."""
        return None if self.model is None else self.model.mode

    @property
    def background_share(self) -> float | None:
        """The pooled background share of the audit (finite, or ``None``)."""
        audit = self.audit.background_share if self.audit is not None else None
        return None if audit is None else finite(audit.pooled)

    @property
    def flip_rate(self) -> float | None:
        """The counterfactual swap's flip rate (finite, or ``None``)."""
        cf = self.audit.counterfactual if self.audit is not None else None
        return None if cf is None else finite(cf.flip_rate)

    def external_site_aucs(self) -> dict[str, float | None]:
        """AUC of every external site (``None`` for one without both classes), in the file's order."""
        return {
            name: finite(site.auc) for name, site in (self.sites or {}).items() if site.role == "external"
        }

    def number(self, path: str) -> float | None:
        """The finite number at a dotted ``path`` of the JSON document (``None`` otherwise): the way to
        a value this model does not name, such as a new gate's metric."""
        cur: Any = self.as_json()
        for part in path.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                return None
            cur = cur[part]
        if isinstance(cur, bool) or not isinstance(cur, (int, float)):
            return None
        return finite(float(cur))
