"""Every name the project gives to things outside it: MLflow experiments and registered models, the
Kubeflow experiment, Kubernetes namespace and labels. One home, so a rename is one edit."""

from __future__ import annotations

__all__ = [
    "BENCH_SEEDS_EXPERIMENT",
    "EXPERIMENT",
    "NAMESPACE",
    "PART_OF",
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
#: Default Kubernetes namespace of the InferenceService and the training jobs.
NAMESPACE = "isnetflow"
#: ``app.kubernetes.io/part-of`` of every Kubernetes object the project creates.
PART_OF = "isnetflow"
