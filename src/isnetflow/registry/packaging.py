"""The old import path of the pyfunc model class, kept so that registered models still load.

MLflow cloudpickles the :class:`~isnetflow.serving.model.CXRClassifier` instance of every package
:func:`~isnetflow.registry.classifier.log_pyfunc` logs, and the pickle names the class by module and name.
Packages logged before the class moved to :mod:`isnetflow.serving.model` name
``isnetflow.registry.packaging.CXRClassifier``: this module makes that name the same class, so
``mlflow.pyfunc.load_model`` still unpickles them (``tests/unit/serving/test_serving_model.py``). Nothing
else lives here; new code imports :mod:`isnetflow.serving.model` and :mod:`isnetflow.registry.classifier`.
"""

from __future__ import annotations

from isnetflow.serving.model import CXRClassifier

__all__ = ["CXRClassifier"]
