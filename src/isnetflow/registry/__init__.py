"""MLflow helpers: tracking configuration, parameter flattening, lineage, loading models (classifiers and
the lung segmenter) from paths or MLflow, model packaging and the registry."""
