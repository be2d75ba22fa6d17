"""MultiBoxLoss: the seed's loop reference vs ssdonnx eager vs onnxruntime, B = 1, 8, 32.

    python tools/bench_loss.py [--repeat N] [--provider auto|cpu|cuda]
"""
import sys

from ssdonnx.app.cli import main

if __name__ == "__main__":
    main(["bench", "loss", "--batch", "1,8,32", *sys.argv[1:]])
