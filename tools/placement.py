"""Where onnxruntime's CUDAExecutionProvider runs each node of exported graphs.

    python tools/placement.py FILE.onnx [FILE.onnx ...] [--simulate-cuda]

On a GPU: from onnxruntime's session profile. With --simulate-cuda (no GPU needed): from
onnxruntime-gpu's kernel registry and partitioner on stand-in CUDA libraries. Exits 1 if
a compute node would run on the CPU.
"""
import sys

from ssdonnx.app.cli import main

if __name__ == "__main__":
    main(["placement", *sys.argv[1:]])
