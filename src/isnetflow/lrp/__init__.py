"""Layer-wise relevance propagation (LRP) for the ISNet training objective.

The public entry point is :func:`relevance`; :func:`lrp_forward` exposes the single instrumented
forward pass on which a training step can compute both the classification loss and any number of
relevance maps. See :mod:`isnetflow.lrp.core` for the formulation and the rules.
"""

from __future__ import annotations

from isnetflow.lrp.core import LRPTrace, UnsupportedLayerError, lrp_forward, relevance, stabilize

__all__ = ["LRPTrace", "UnsupportedLayerError", "lrp_forward", "relevance", "stabilize"]
