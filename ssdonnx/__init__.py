"""ssdonnx: SSD object detection, its detection head and its training loss, end to end
through ONNX.

Dimension letters, used in every docstring and shape comment:
    B  batch
    P  default boxes (priors, DBox)
    G  ground-truth boxes per image (padded; padding rows have label -1)
    C  classes including background (index 0)
    K  detections kept per image
Boxes are normalised to [0, 1]; ``xyxy`` is (x1, y1, x2, y2), ``cxcywh`` (cx, cy, w, h).

The package reads as the data flow: the core maths at the top (``config``, ``priors``,
``boxes``, ``matching``, ``loss``, ``postprocess``, ``model``, ``transforms``,
``pictures``, ``checks``, ``errors``); ``deploy`` (to ONNX and back); ``training``;
``app`` (the command line); ``devtools`` and ``testing`` for developing ssdonnx.

The names below are imported on first use, so that ``import ssdonnx`` (and the command
line's ``--help``) does not pay for importing torch and onnxruntime.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    # errors
    "InputError": "errors", "ConfigError": "errors", "CheckpointError": "errors",
    "OnnxFileError": "errors", "OutputError": "errors", "DataError": "errors",
    "ParityError": "errors",
    # the core
    "SSDConfig": "config", "get_config": "config", "preset_names": "config",
    "default_boxes": "priors", "match": "matching", "pad_targets": "matching",
    "MultiBoxLoss": "loss", "SSD": "model", "build_model": "networks", "load_weights": "model",
    "load_matching": "model",
    "DetectionHead": "postprocess", "SSDDetector": "postprocess", "detect": "postprocess",
    "preprocess": "transforms", "read_picture": "pictures",
    # deployment
    "export": "deploy.export", "export_all": "deploy.export", "verify": "deploy.parity",
    "read_info": "deploy.onnxfile", "Session": "deploy.runtime", "session": "deploy.runtime",
    "Detector": "deploy.predict", "Detections": "deploy.predict",
    # training
    "train": "training.train", "VOCDataset": "training.data", "voc_map": "training.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        try:   # a submodule: ssdonnx.boxes, ssdonnx.deploy, ...
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
