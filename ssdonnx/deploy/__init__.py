"""From PyTorch to a checked ONNX file and back: the exportable graphs (``graphs``), the
file's metadata without torch (``onnxfile``), files written whole (``files``), the
checked export (``export``), int8 detectors (``quantize``), onnxruntime sessions
(``runtime``), the ONNX reference implementation (``reference_runtime``), parity with
PyTorch (``parity``), loss inputs from npz files (``arrays``) and detection on pictures
(``predict``)."""
