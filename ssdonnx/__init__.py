"""ssdonnx: SSD object detection, its detection head and its training loss, end to end
through ONNX.

Dimension letters, used in every docstring and shape comment:
    B  batch
    P  default boxes (priors, DBox)
    G  ground-truth boxes per image (padded; padding rows have label -1)
    C  classes including background (index 0)
    K  detections kept per image
Boxes are normalised to [0, 1]; ``xyxy`` is (x1, y1, x2, y2), ``cxcywh`` (cx, cy, w, h).
"""

__version__ = "0.1.0"

from .config import ConfigError, SSDConfig, get_config  # noqa: E402
from .priors import default_boxes  # noqa: E402
from .matching import match, pad_targets  # noqa: E402
from .loss import MultiBoxLoss  # noqa: E402
from .model import SSD, load_weights  # noqa: E402
from .postprocess import DetectionHead, SSDDetector, detect  # noqa: E402
from .transforms import preprocess  # noqa: E402

__all__ = [
    "ConfigError", "DetectionHead", "MultiBoxLoss", "SSD", "SSDConfig", "SSDDetector",
    "default_boxes", "detect", "get_config", "load_weights", "match", "pad_targets",
    "preprocess",
]
