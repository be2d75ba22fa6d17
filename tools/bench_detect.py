"""Detection head vs the seed's Detect loop, and the whole SSD300 detector in eager
PyTorch vs onnxruntime, B = 1, 8.

    python tools/bench_detect.py [--repeat N] [--provider auto|cpu|cuda]
"""
import sys

from ssdonnx.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    for what in ("head", "detector"):
        try:
            main(["bench", what, "--batch", "1,8", *args], standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise
