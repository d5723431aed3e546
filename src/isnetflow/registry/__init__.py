"""MLflow helpers: tracking configuration, parameter flattening, lineage, logging classifiers as pyfunc
packages and loading models (classifiers and the lung segmenter) from paths or MLflow, and the registry
(promotion, aliases, rollback).

The pyfunc model class and its format are :mod:`isnetflow.serving.model`'s; ``packaging`` and
``mlserver_runtime`` here are only the old import paths of moved classes, kept for models and
ServingRuntimes that name them."""
