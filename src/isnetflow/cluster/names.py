"""Every name the project gives to things in a Kubernetes cluster: the namespace, labels, service accounts,
the serving runtime, and the Secrets and ConfigMap the pipeline's tasks read. One home, so a rename is one
edit; the manifests of ``k8s/`` use the same names (``tests/deploy`` check that they agree).

MLflow's names (experiments, registered models) are :mod:`isnetflow.names`'.
"""

from __future__ import annotations

__all__ = [
    "CONFIG_MAP",
    "MLFLOW_CLIENT_LABEL",
    "MLFLOW_SECRET",
    "NAMESPACE",
    "PART_OF",
    "PREDICTOR_ACCOUNT",
    "S3_CLIENT_LABEL",
    "S3_SECRET",
    "SERVING_LABEL",
    "SERVING_RUNTIME",
    "TRAINING_POD_LABEL",
    "TRAINJOB_LABEL",
    "WORKLOAD_ACCOUNT",
]

#: Default Kubernetes namespace of the InferenceService and the training jobs.
NAMESPACE = "isnetflow"
#: ``app.kubernetes.io/part-of`` of every Kubernetes object the project creates.
PART_OF = "isnetflow"

#: pod labels every training pod carries (they cannot be overridden): the NetworkPolicy training-pods of
#: k8s/base/networkpolicies.yaml admits, into a pod labelled TRAINING_POD_LABEL="true", only pods labelled
#: so; TRAINJOB_LABEL names the pod's TrainJob (for kubectl, logs and metrics)
TRAINING_POD_LABEL = "isnetflow.io/training-pod"
TRAINJOB_LABEL = "isnetflow.io/trainjob"
#: pod labels the namespace's servers admit (k8s/base/networkpolicies.yaml: MLflow; k8s/overlays/dev:
#: MinIO), value "true": a pod that talks to the MLflow server, or reads and writes the dev overlay's MinIO
MLFLOW_CLIENT_LABEL = "isnetflow.io/mlflow-client"
S3_CLIENT_LABEL = "isnetflow.io/s3-client"
#: the predictor pods' label (value "champion"), which the NetworkPolicy of k8s/serving admits clients to
SERVING_LABEL = "isnetflow.io/serving"

#: the service account of the distributed training's pods: token-less, they never call the API
WORKLOAD_ACCOUNT = "isnetflow-workload"
#: the ServingRuntime and ServiceAccount of ``k8s/serving`` (tests/deploy check the names agree)
SERVING_RUNTIME = "isnetflow-mlserver"
PREDICTOR_ACCOUNT = "cxr-predictor"

#: Kubernetes objects the pipeline's tasks read (k8s/ creates them under these names): the S3 and MLflow
#: credentials (Secrets) and the endpoints (ConfigMap)
S3_SECRET = "isnetflow-s3-credentials"
MLFLOW_SECRET = "isnetflow-mlflow-credentials"
CONFIG_MAP = "isnetflow-config"
