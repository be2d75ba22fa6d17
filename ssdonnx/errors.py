"""The errors ssdonnx raises for bad input, in one light module (no torch, no onnxruntime),
so that the command line can name them without importing the heavy libraries."""


class ConfigError(ValueError):
    """A preset name that does not exist or a config file that does not parse."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class OnnxFileError(ValueError):
    """An ONNX file that is not ssdonnx's, or not the kind a command needs."""


class OutputError(ValueError):
    """A file or folder that cannot be written where the caller asked."""


class ProviderError(RuntimeError):
    """The requested execution provider cannot run here."""


class StandInUnavailable(RuntimeError):
    """The stand-in CUDA libraries for a simulated placement check cannot be built here."""


class CalibrationError(ValueError):
    """Calibration pictures for int8 quantization that are missing or unreadable."""
