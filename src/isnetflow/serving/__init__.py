"""The champion in use: the pyfunc model the registry holds, MLServer's runtime for it, explanations.

- :mod:`~isnetflow.serving.model`: :class:`~isnetflow.serving.model.CXRClassifier` (the pyfunc model:
  probabilities, heatmaps on demand), the facts stored with it and its signature;
- :mod:`~isnetflow.serving.mlserver_runtime`: the MLServer runtime KServe runs it with (imports MLServer:
  only MLServer imports it);
- :mod:`~isnetflow.serving.explain`: files -> model inputs, and ``isnetflow explain``'s explanations.

Logging and loading a model (MLflow runs, the registry) is :mod:`isnetflow.registry.classifier`'s; the
KServe manifests are :mod:`isnetflow.cluster.kserve`'s. Nothing here imports the registry or the stages.
"""
