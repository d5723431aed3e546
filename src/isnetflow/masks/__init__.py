"""Lung masks: a MONAI segmenter with shipped weights, its training, inference, post-processing and QC.

Main entry points:

* :class:`LungSegmenter` - load weights (the shipped ones by default) and segment radiographs at their
  original resolution.
* :func:`postprocess` - keep the two largest components and fill holes.
* :func:`assess` - QC of a mask (area, components, sides, balance, fragments, confidence).
* :func:`train_segmenter` - the training loop (the stage :mod:`isnetflow.stages.segmenter` adds data
  loading, MLflow tracking and the model card).
* :data:`SHIPPED_SPEC` - the spec JSON of the weights shipped in ``isnetflow/masks/weights``.
"""

from .inference import LungSegmenter, Prediction
from .network import SHIPPED_DIR, SHIPPED_SPEC, build_network, load_network, save_network
from .postprocess import postprocess
from .qc import MaskQC, assess, assess_prediction
from .spec import SegmenterSpec, sha256_file
from .train import TrainResult, train_segmenter

__all__ = [
    "SHIPPED_DIR",
    "SHIPPED_SPEC",
    "LungSegmenter",
    "MaskQC",
    "Prediction",
    "SegmenterSpec",
    "TrainResult",
    "assess",
    "assess_prediction",
    "build_network",
    "load_network",
    "postprocess",
    "save_network",
    "sha256_file",
    "train_segmenter",
]
