"""The errors ssdonnx raises for bad input, in one light module (no torch, no onnxruntime).

Every error that a caller's input causes (a tensor of the wrong shape, a file that is not
what it should be, a folder that cannot be written) derives from ``InputError``; the
command line turns exactly these (and ``OSError`` from the user's own paths) into a
one-line message and exit status 2. Anything else is a bug and keeps its traceback.

``InputError`` is a ``ValueError``, and ``InputTypeError`` also a ``TypeError``, so code
that caught those before still does.
"""


class InputError(ValueError):
    """Bad input: the message names what is wrong and, where it helps, what to do."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type or dtype."""


class ConfigError(InputError):
    """A preset name that does not exist or a config file that does not parse."""


class CheckpointError(InputError):
    """A checkpoint that cannot be read or does not fit the model."""


class OnnxFileError(InputError):
    """An ONNX file that is not ssdonnx's, or not the kind a command needs."""


class OutputError(InputError):
    """A file or folder that cannot be written where the caller asked, or that would
    replace something the caller did not ask to replace."""


class DataError(InputError):
    """A data set, annotation file or picture that cannot be used, named."""


class CalibrationError(DataError):
    """Calibration pictures for int8 quantization that are missing or unreadable."""


class ProviderError(InputError, RuntimeError):
    """The requested execution provider cannot run here."""


class StandInUnavailable(InputError, RuntimeError):
    """The stand-in CUDA libraries for a simulated placement check cannot be built here."""


class ParityError(Exception):
    """An exported file whose outputs differ from PyTorch's beyond the named tolerances
    (or an int8 detector that agrees too little with float32). Not bad input: the
    command line exits with status 1. ``verifications`` holds the reports."""

    def __init__(self, *verifications):
        self.verifications = verifications
        names = ", ".join(str(v.name) for v in verifications)
        super().__init__(f"parity check failed for {names}: not written (an existing file "
                         "stays as it was); --no-verify writes it unchecked")
