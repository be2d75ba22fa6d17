"""Detection head (decode + NMS) vs the seed's Detect loop: ssdonnx eager and onnxruntime,
B = 1, 8. (Whole detectors, float32 and int8: tools/bench_detectors.py.)

    python tools/bench_detect.py [--repeat N] [--provider auto|cpu|cuda]
"""
import sys

from ssdonnx.app.cli import main

if __name__ == "__main__":
    main(["bench", "head", "--batch", "1,8", *sys.argv[1:]])
