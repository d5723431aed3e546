"""MLflow helpers: tracking configuration, parameter flattening, model packaging and the registry."""
