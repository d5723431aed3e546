"""Every name the project gives to things outside it, Kubernetes objects aside: MLflow experiments and
registered models, the Kubeflow experiment. One home, so a rename is one edit; the Kubernetes names
(namespace, labels, service accounts, Secrets) have theirs, :mod:`isnetflow.cluster.names`."""

from __future__ import annotations

__all__ = [
    "BENCH_SEEDS_EXPERIMENT",
    "EXPERIMENT",
    "REGISTERED_MODEL",
    "RETRAIN_EXPERIMENT",
    "SEGMENTER_MODEL",
]

#: MLflow experiment of the pipeline's runs (train, evaluate, promote); also the KFP experiment name.
EXPERIMENT = "isnetflow"
#: MLflow experiment of the scheduled retraining's data-check and candidate-outcome runs.
RETRAIN_EXPERIMENT = "isnetflow-retraining"
#: MLflow experiment of `isnetflow bench seeds` (one run per seed and arm).
BENCH_SEEDS_EXPERIMENT = "isnetflow-bench-seeds"
#: The classifier's registered model in the MLflow registry, and the default InferenceService name.
REGISTERED_MODEL = "cxr-isnet"
#: The lung segmenter's registered model and its training experiment.
SEGMENTER_MODEL = "lung-segmenter"
