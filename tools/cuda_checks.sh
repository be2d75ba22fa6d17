#!/usr/bin/env bash
# CUDA parity and placement checks on a GPU machine (onnxruntime-gpu and a CUDA torch):
# the tests marked `cuda`, the placement report of the loss and detector graphs, then the
# benchmarks on the CUDA provider.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, onnxruntime as ort; assert torch.cuda.is_available(), 'no CUDA device'; \
assert 'CUDAExecutionProvider' in ort.get_available_providers(), 'install onnxruntime-gpu'; \
print(torch.cuda.get_device_name())"
python -m pytest -q -m cuda -rs
graphs=$(mktemp -d)
ssdonnx export all --config ssd300-voc --output "$graphs" --no-verify
python tools/placement.py "$graphs/loss.onnx" "$graphs/detector.onnx"
python tools/bench_loss.py --provider cuda
python tools/bench_detect.py --provider cuda
ssdonnx bench detector --provider cuda --batch 1,8
