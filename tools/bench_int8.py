"""The whole SSD300 detector on the CPU: eager PyTorch, onnxruntime float32, and
onnxruntime int8 (network quantized, head float32), B = 1, 8, in one run; then int8
against float32.

    python tools/bench_int8.py [--repeat N] [--config NAME]
"""
import sys

from ssdonnx.app.cli import main

if __name__ == "__main__":
    main(["bench", "detector", "--int8", "--provider", "cpu", "--batch", "1,8", *sys.argv[1:]])
