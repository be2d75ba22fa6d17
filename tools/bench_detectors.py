"""Whole detectors on the CPU, SSD300 (the seed's VGG16) against pytorch-ssd's mb1-ssd and
mb2-ssd-lite: eager PyTorch, onnxruntime float32 and int8 (network quantized, head
float32), B = 1, 8, in one run; then each network against SSD300, and int8 against
float32.

    python tools/bench_detectors.py [--repeat N]
"""
import sys

from ssdonnx.app.cli import main

if __name__ == "__main__":
    main(["bench", "detector", "--int8", "--provider", "cpu", "--batch", "1,8",
          "--config", "ssd300-voc,mb1-ssd,mb2-ssd-lite", *sys.argv[1:]])
