"""Kubernetes: the project's names in a cluster, and what it asks a cluster to run.

- :mod:`~isnetflow.cluster.names`: namespace, labels, service accounts, serving runtime, Secrets and
  ConfigMap (one home; ``k8s/`` uses the same names);
- :mod:`~isnetflow.cluster.trainjob`: the Kubeflow Trainer ``TrainJob`` client: manifest (labels,
  tolerations, hardening), submit, watch, adopt a retried task's job;
- :mod:`~isnetflow.cluster.launcher`: the pipeline's distributed training as a TrainJob (its name, the
  pods' ``isnetflow train`` options) and the wait for it; the train stage finds the MLflow run it logged;
- :mod:`~isnetflow.cluster.kserve`: the KServe ``InferenceService`` serving a registered model version.

Nothing here imports kfp, the registry or the stages. Importing the package imports no Kubernetes client
(``names`` is plain constants).
"""
