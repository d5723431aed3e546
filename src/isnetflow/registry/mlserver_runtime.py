"""The old import path of the MLServer runtime class, kept for ServingRuntimes already in a cluster.

``k8s/serving/servingruntime.yaml`` names the runtime class in ``MLSERVER_MODEL_IMPLEMENTATION``; it now
says ``isnetflow.serving.mlserver_runtime.CXRMLflowRuntime``. A ServingRuntime applied from the earlier
manifest says ``isnetflow.registry.mlserver_runtime.CXRMLflowRuntime``, and its pods pull the image
again at every start (``imagePullPolicy: Always``, tag ``0.1.0`` unchanged): with a newer image under that
tag they import this path. This module keeps it naming the same class until every cluster has applied
``k8s/serving`` again. Like the runtime itself, it imports MLServer, so only MLServer imports it.
"""

from __future__ import annotations

from isnetflow.serving.mlserver_runtime import CXRMLflowRuntime

__all__ = ["CXRMLflowRuntime"]
