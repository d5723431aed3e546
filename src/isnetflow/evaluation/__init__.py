"""Evaluation of trained classifiers: metrics, bootstrap CIs, calibration, shortcut audit, reports.

* :mod:`~isnetflow.evaluation.metrics` -- AUC, F1, sensitivity/specificity, balanced accuracy, Brier,
  ECE, Youden threshold, ROC points (scikit-learn);
* :mod:`~isnetflow.evaluation.bootstrap` -- patient-level bootstrap confidence intervals;
* :mod:`~isnetflow.evaluation.explain` -- zennit composites with a graph-checked batch-norm canonizer;
* :mod:`~isnetflow.evaluation.counterfactual` -- the lungs-on-another-background test;
* :mod:`~isnetflow.evaluation.core` -- the evaluation of one model (split logic, output keys);
* :mod:`~isnetflow.evaluation.plots` / :mod:`~isnetflow.evaluation.report` -- figures, HTML, kfp data;
* :mod:`~isnetflow.evaluation.io` -- the evaluation's data and its ``evaluation.json`` read back (shared
  by the evaluate and promote stages).

Everything here is pure apart from the plot functions writing the PNG they are asked for and the readers
of :mod:`~isnetflow.evaluation.io`; the stage :mod:`isnetflow.stages.evaluate` writes outputs and tracks
with MLflow.
"""

from isnetflow.evaluation.core import EvaluationError, EvaluationResult, evaluate_model, evaluate_predictions

__all__ = ["EvaluationError", "EvaluationResult", "evaluate_model", "evaluate_predictions"]
