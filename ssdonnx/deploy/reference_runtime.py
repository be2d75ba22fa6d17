"""The ONNX reference implementation (``onnx.reference.ReferenceEvaluator``) as a session:
an implementation of the ONNX specification independent of onnxruntime, in NumPy, for
checking that the exported graphs mean what onnxruntime computes. Slow (seconds per
SSD300 run); for verification, not deployment.

One operator is replaced: the stock ``GatherElements`` is built on ``numpy.choose``,
which takes at most 64 choices along the gathered axis (a limit of NumPy, not of the
specification), and the detector gathers along thousands. ``GatherElements`` below is
the specification's definition written with ``numpy.take_along_axis``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from ..errors import InputError
from .onnxfile import load_proto


class GatherElements(OpRun):
    """ONNX GatherElements (opset 13): ``output[i][j][k] = data[index[i][j][k]][j][k]``
    along ``axis``, negative indices counting from the end of that axis."""

    def _run(self, data, indices, axis=None):
        axis = 0 if axis is None else int(axis)
        indices = np.asarray(indices).astype(np.int64)
        size = data.shape[axis]
        if ((indices < -size) | (indices >= size)).any():
            raise ValueError(f"GatherElements: an index is outside [-{size}, {size - 1}]")
        return (np.take_along_axis(data, np.where(indices < 0, indices + size, indices),
                                   axis=axis),)


class ReferenceSession:
    """``run(**inputs) -> dict`` of NumPy outputs, like ``runtime.Session``, on the ONNX
    reference implementation."""

    provider = "reference"
    note = ""

    def __init__(self, path):
        self.path = Path(path)
        proto = load_proto(path)
        self.evaluator = ReferenceEvaluator(proto, new_ops=[GatherElements])
        self.input_names = list(self.evaluator.input_names)
        self.output_names = list(self.evaluator.output_names)

    def run(self, **inputs) -> dict[str, np.ndarray]:
        missing = sorted(set(self.input_names) - set(inputs))
        if missing:
            raise InputError(f"missing inputs {missing}; the graph takes {self.input_names}")
        feeds = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                 for k, v in inputs.items() if k in self.input_names}
        return dict(zip(self.output_names, self.evaluator.run(None, feeds)))
