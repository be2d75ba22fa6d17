"""For developing ssdonnx, not for using it: benchmarks (``bench``), and where
onnxruntime's CUDA provider places each node (``placement``, with stand-in CUDA
libraries from ``cudastub`` where there is no GPU)."""
