#!/usr/bin/env bash
# The simulated CUDA placement check (ssdonnx placement --simulate-cuda) under the oldest
# onnxruntime-gpu that pyproject.toml allows, installed into a throwaway virtualenv.
# Run from the project's virtualenv (it exports the graphs with torch):
#     tools/cuda_floor_check.sh [VERSION]        (default 1.21.1)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-1.21.1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "onnxruntime-gpu==$version" onnx click
ssdonnx export all --config ssd300-voc --output "$work/ssd300-voc" --no-verify
ssdonnx export detector --config ssd-shapes --weights models/ssd-shapes/weights.pth \
    --output "$work/ssd-shapes-detector.onnx" --no-verify
# Only onnx, onnxruntime and click are needed: the check imports neither torch nor ssdonnx's
# PyTorch modules; the stand-in libraries are built for this onnxruntime into their own cache.
PYTHONPATH="$PWD" XDG_CACHE_HOME="$work/cache" "$work/venv/bin/python" -m ssdonnx \
    placement --simulate-cuda "$work"/ssd300-voc/*.onnx "$work/ssd-shapes-detector.onnx"
