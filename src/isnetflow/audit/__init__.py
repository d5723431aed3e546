"""The shortcut audit's instruments, shared by training (model selection) and evaluation (gates).

* :mod:`~isnetflow.audit.explain` -- zennit composites with a graph-checked batch-norm canonizer: the
  independent LRP heatmaps and the share of relevance outside the lungs (the background-share gate);
* :mod:`~isnetflow.audit.counterfactual` -- the lungs-on-another-background test: donor choice, the
  swap, and the flip rate / score change it causes.

Nothing here imports training or evaluation: both use these, so they sit below both.
"""
