"""int8 detectors for the CPU: the network quantized, the detection head kept in float32.

The network is exported alone and quantized with onnxruntime's static quantization
(``quant_pre_process``, then ``quantize_static`` in QDQ format: weights int8 per output
channel, activations uint8, ranges from MinMax calibration on the user's pictures, sent
through the same ``preprocess`` as at inference). Only convolutions and max pooling are
quantized: they carry nearly all of the network's arithmetic and onnxruntime runs them
on int8 kernels on the CPU; L2Norm and the reshapes stay float32. The detection head
(softmax, decode, NMS) is exported separately in float32 and joined to the quantized
network by composition (``onnx.compose``), so the int8 detector has exactly the float32
detector's inputs and outputs.

int8 detectors are for CPUExecutionProvider; onnxruntime's CUDA provider runs QDQ graphs
mostly as float, so on a GPU export the float32 detector.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from ..config import SSDConfig
from ..errors import CalibrationError, DataError
from ..pictures import collect_pictures, load_batch
from .graphs import batch_dim, build_graph, to_onnx
from .onnxfile import OUTPUT_NAMES, graph_metadata, set_metadata

# The operators quantized (see the module docstring).
INT8_OPS = ("Conv", "MaxPool")
CALIBRATION_BATCH = 8
DEFAULT_CALIBRATION_PICTURES = 64


def calibration_pictures(folder, limit: int | None = None) -> list[Path]:
    """The first ``limit`` pictures (sorted by path) of a folder, searched recursively
    for every format Pillow reads, or of a VOC-layout data set's JPEGImages/."""
    try:
        return collect_pictures(folder, limit or DEFAULT_CALIBRATION_PICTURES)
    except DataError as exc:
        raise CalibrationError(f"calibration: {exc}") from None


def load_pictures(files: list[Path], cfg: SSDConfig) -> np.ndarray:
    """The pictures pre-processed for the network: float32 [N, 3, S, S]. Raises
    CalibrationError naming every picture that cannot be read."""
    try:
        return load_batch(files, cfg)
    except DataError as exc:
        raise CalibrationError(f"calibration: {exc}") from None


def file_list_sha256(files: list[Path], root: Path) -> str:
    """sha256 of the pictures' paths relative to ``root``, one per line: which set it was."""
    names = "".join(f"{f.relative_to(root).as_posix()}\n" for f in files)
    return hashlib.sha256(names.encode()).hexdigest()


def quantize_network(network: onnx.ModelProto, images: np.ndarray, progress=None
                     ) -> onnx.ModelProto:
    """The float32 network (input ``images``) quantized for the CPU, calibrated on
    ``images`` [N, 3, S, S]; ``progress(n, N)`` after each calibration batch."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(images), CALIBRATION_BATCH))

        def get_next(self):
            start = next(self.starts, None)
            if start is None:
                return None
            batch = images[start:start + CALIBRATION_BATCH]
            if progress:
                progress(len(batch), len(images))
            return {"images": batch}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx.save_model(network, tmp / "float.onnx")
        quant_pre_process(str(tmp / "float.onnx"), str(tmp / "prepared.onnx"))
        quantize_static(str(tmp / "prepared.onnx"), str(tmp / "int8.onnx"), Batches(),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=list(INT8_OPS),
                        calibrate_method=CalibrationMethod.MinMax)
        return onnx.load(str(tmp / "int8.onnx"))


def int8_detector(cfg: SSDConfig, weights, pictures: list[Path], calibration_root,
                  opset: int, thresholds: dict | None = None, progress=None
                  ) -> onnx.ModelProto:
    """The int8 detector for ``cfg`` (see the module docstring), with its metadata."""
    detector = build_graph("detector", cfg, weights, thresholds)
    images = load_pictures(pictures, cfg)
    B = batch_dim()
    network = to_onnx(detector.model, {"images": torch.from_numpy(images[:2])},
                      OUTPUT_NAMES["model"], {"images": {0: B}}, opset)
    with torch.no_grad():
        loc, conf = detector.model(torch.from_numpy(images[:2]))
    head = to_onnx(detector.head, {"loc": loc, "conf": conf}, OUTPUT_NAMES["detector"],
                   {"loc": {0: B}, "conf": {0: B}}, opset)
    float_sha256 = hashlib.sha256(network.SerializeToString(deterministic=True)).hexdigest()
    quantized = quantize_network(network, images, progress)
    # The head's inner names get a prefix; its inputs loc and conf are the network's outputs.
    head = onnx.compose.add_prefix(head, "head/", rename_inputs=False, rename_outputs=False)
    merged = onnx.compose.merge_models(quantized, head, io_map=[("loc", "loc"),
                                                                ("conf", "conf")])
    root = Path(calibration_root)
    metadata = graph_metadata("detector", cfg, weights, detector.thresholds())
    metadata.update({
        "ssdonnx.precision": "int8",
        "ssdonnx.calibration": json.dumps({
            "folder": str(root.resolve()), "pictures": len(pictures),
            "files_sha256": file_list_sha256(pictures, root)}),
        "ssdonnx.float_source": json.dumps({
            "weights": metadata["ssdonnx.weights"], "network_sha256": float_sha256,
            "quantized": list(INT8_OPS)}),
    })
    del merged.metadata_props[:]
    set_metadata(merged, metadata)
    return merged
