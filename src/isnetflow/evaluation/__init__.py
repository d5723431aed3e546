"""Evaluation of trained classifiers: metrics, bootstrap CIs, calibration, shortcut audit, reports.

* :mod:`~isnetflow.evaluation.metrics` -- AUC, F1, sensitivity/specificity, balanced accuracy, Brier,
  ECE, Youden threshold, ROC points (scikit-learn);
* :mod:`~isnetflow.evaluation.bootstrap` -- patient-level bootstrap confidence intervals;
* :mod:`~isnetflow.audit.explain` -- zennit composites with a graph-checked batch-norm canonizer;
* :mod:`~isnetflow.audit.counterfactual` -- the lungs-on-another-background test;
* :mod:`~isnetflow.evaluation.core` -- the evaluation of one model (split logic, output keys);
* :mod:`~isnetflow.evaluation.plots` / :mod:`~isnetflow.evaluation.report` -- figures, HTML, kfp data;
* :mod:`~isnetflow.evaluation.io` -- the evaluation's data and its ``evaluation.json`` read back (shared
  by the evaluate and promote stages);
* :mod:`~isnetflow.evaluation.keys` -- the dotted paths of ``evaluation.json`` values (metric keys); the
  file itself is typed in :mod:`isnetflow.artifacts.evaluation`;
* :mod:`~isnetflow.evaluation.gates` -- the promotion gate registry and the pass/fail checks.

The audit's instruments (zennit heatmaps, the counterfactual background swap) are in
:mod:`isnetflow.audit`, below this package, because training uses them too.

Everything here is pure apart from the plot functions writing the PNG they are asked for and the readers
of :mod:`~isnetflow.evaluation.io`; the stage :mod:`isnetflow.stages.evaluate` writes outputs and tracks
with MLflow.

The names below load :mod:`~isnetflow.evaluation.core` (torch) on first use, so that light readers such
as :mod:`~isnetflow.evaluation.keys` can be imported alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isnetflow.evaluation.core import (
        EvaluationError,
        EvaluationResult,
        evaluate_model,
        evaluate_predictions,
    )

__all__ = ["EvaluationError", "EvaluationResult", "evaluate_model", "evaluate_predictions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from isnetflow.evaluation import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
