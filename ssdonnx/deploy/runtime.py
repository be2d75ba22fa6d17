"""onnxruntime sessions that never fall back to the CPU silently.

torch is imported only where tensors or a GPU are involved (a CUDA session imports it
first, so that onnxruntime finds the CUDA libraries of the torch wheels): ``ssdonnx
info`` lists the providers without it.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import InputError, OnnxFileError, ProviderError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


# The shared library behind each provider that onnxruntime-gpu loads on demand.
_PROVIDER_LIBRARIES = {"CUDAExecutionProvider": "libonnxruntime_providers_cuda.so",
                       "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so"}


def available_providers() -> list[str]:
    """The providers compiled into this onnxruntime (not all of them may load here)."""
    return list(ort.get_available_providers())


def provider_problem(name: str) -> str | None:
    """Why provider ``name`` cannot load here, in a few words, or None if it can.

    Loads the provider's shared library the way onnxruntime would, so that a missing
    CUDA, cuDNN or TensorRT library is named instead of onnxruntime printing its loader
    errors. (A library that loads proves no GPU; the session still checks that.)
    """
    if name not in ort.get_available_providers():
        return "not in this onnxruntime build (install onnxruntime-gpu)"
    library = Path(ort.__file__).parent / "capi" / _PROVIDER_LIBRARIES.get(name, "")
    if name not in _PROVIDER_LIBRARIES or not library.is_file():
        return None
    if hasattr(ort, "preload_dlls"):
        # The CUDA and cuDNN libraries of the nvidia wheels (torch's, if imported); it
        # prints what it cannot find, which the answer below says in a few words.
        with contextlib.redirect_stdout(io.StringIO()):
            ort.preload_dlls()
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        message = str(exc)
        missing = message.split(":", 1)[0]
        return f"{missing} not found" if "cannot open shared object" in message else message
    return None


def _options(threads: int | None, spinning: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4   # failures reach the caller as ProviderError instead
    if threads:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _refused(path: str, exc: Exception, what: str = "load") -> OnnxFileError:
    """onnxruntime's own exceptions (InvalidArgument, Fail, ...) as one line."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return OnnxFileError(f"onnxruntime cannot {what} {path}: {first[:300]}")


def _is_onnxruntime_error(exc: Exception) -> bool:
    return type(exc).__module__.startswith("onnxruntime")


def _new_session(path: str, opts, providers: list[str]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(path, opts, providers=providers)
    except Exception as exc:
        if _is_onnxruntime_error(exc):
            raise _refused(path, exc) from None
        raise


def _cuda_session(path: str, opts, probe: bool = False) -> ort.InferenceSession:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ProviderError("CUDAExecutionProvider is not available: install "
                            "onnxruntime-gpu (and not onnxruntime beside it)")
    import torch  # before the session: loads the CUDA libraries of the torch wheels

    if probe and not torch.cuda.is_available():
        # auto on a machine without a GPU: don't make onnxruntime print its loader errors
        raise ProviderError("no CUDA device visible to torch")
    problem = provider_problem("CUDAExecutionProvider")
    if problem:
        raise ProviderError(f"CUDAExecutionProvider cannot load: {problem} (onnxruntime-gpu "
                            f"{ort.__version__} needs the CUDA and cuDNN libraries it was "
                            "built for)")
    sess = _new_session(path, opts, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        raise ProviderError("onnxruntime could not load CUDAExecutionProvider (no GPU, or "
                            f"CUDA libraries missing); the session got {sess.get_providers()}")
    return sess


class Session:
    """An onnxruntime session on a provider that really loaded.

    provider: ``cpu``, ``cuda`` (a clear error unless CUDAExecutionProvider is the
    session's first provider) or ``auto`` (CUDA when it truly loads, else CPU; ``note``
    says which and why). ``run`` takes NumPy arrays or torch tensors; tensors already on
    a CUDA device go through IOBinding (``run_torch``) and the outputs come back as CUDA
    tensors. ``spinning=False`` stops idle onnxruntime threads from spin-waiting for the
    next run (its default, fastest for back-to-back runs), which would slow whatever runs
    next on the same cores: the benchmarks, which take turns with PyTorch, turn it off.
    """

    def __init__(self, path, provider: str = "auto", threads: int | None = None,
                 profile: str | Path | None = None, spinning: bool = True):
        if provider not in ("auto", "cpu", "cuda"):
            raise InputError(f"provider: expected auto, cpu or cuda, got {provider!r}")
        path = str(Path(path))
        opts = _options(threads, spinning)
        if profile is not None:   # onnxruntime writes <profile>_<timestamp>.json
            opts.enable_profiling = True
            opts.profile_file_prefix = str(profile)
        self.note = ""
        self.path = path
        if provider == "cpu":
            self.session = _new_session(path, opts, ["CPUExecutionProvider"])
        elif provider == "cuda":
            self.session = _cuda_session(path, opts)
        else:
            try:
                self.session = _cuda_session(path, opts, probe=True)
                self.note = "auto: CUDAExecutionProvider loaded"
            except ProviderError as exc:
                self.session = _new_session(path, opts, ["CPUExecutionProvider"])
                self.note = f"auto: using CPU ({exc})"
        self.provider = "cuda" if self.session.get_providers()[0] == PROVIDERS["cuda"] else "cpu"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, **inputs):
        """Run on named inputs; returns a dict of outputs (NumPy, or CUDA tensors).

        Torch tensors that are all on the CUDA device of a CUDA session go through
        ``run_torch`` (no host round trip); anything else is fed as NumPy.
        """
        on_cuda = [_is_tensor(v) and v.is_cuda for v in inputs.values()]
        if self.provider == "cuda" and all(on_cuda):
            return self.run_torch(**inputs)   # checks the names itself
        self._check_names(inputs)
        feeds = {k: (v.detach().cpu().numpy() if _is_tensor(v) else np.asarray(v))
                 for k, v in inputs.items() if k in self.input_names}
        try:
            outputs = self.session.run(self.output_names, feeds)
        except Exception as exc:
            if _is_onnxruntime_error(exc):
                raise _refused(self.path, exc, "run") from None
            raise
        return dict(zip(self.output_names, outputs))

    def run_torch(self, **inputs):
        """Run on torch tensors through IOBinding; outputs are tensors on the same device.

        The session reads the inputs' memory and writes its outputs in place on that
        device (for a CUDA session, CUDA tensors), so nothing is copied to or from the
        host. All inputs must be on one device.
        """
        import torch

        self._check_names(inputs)
        tensors = [inputs[name] for name in self.input_names]
        devices = {t.device for t in tensors}
        if len(devices) != 1:
            raise InputError("run_torch: inputs are on several devices "
                             f"{sorted(map(str, devices))}")
        device = devices.pop()
        if device.type != self.provider:
            raise InputError(f"run_torch: inputs are on {device}, the session runs on "
                             f"{self.provider}")
        binding = self.session.io_binding()
        # IOBinding keeps raw pointers: hold the contiguous tensors until the run is over.
        bound = {name: t.detach().contiguous() for name, t in zip(self.input_names, tensors)}
        np_dtypes = {torch.float32: np.float32, torch.float16: np.float16,
                     torch.int64: np.int64}
        for name, t in bound.items():
            if t.dtype not in np_dtypes:
                raise InputError(f"{name}: dtype {t.dtype} cannot be bound; expected one of "
                                 f"{sorted(map(str, np_dtypes))}")
            binding.bind_input(name, device.type, device.index or 0, np_dtypes[t.dtype],
                               list(t.shape), t.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, device.type, device.index or 0)
        if device.type == "cuda":
            # torch may still be writing the inputs on its stream, and onnxruntime reads
            # them on its own; its Run waits for its stream, so the outputs are ready.
            torch.cuda.current_stream(device).synchronize()
        self.session.run_with_iobinding(binding)
        # DLPack hands each output's memory to torch without a copy.
        return {name: torch.from_dlpack(value)
                for name, value in zip(self.output_names, binding.get_outputs())}

    def _check_names(self, inputs) -> None:
        missing = sorted(set(self.input_names) - set(inputs))
        if missing:
            raise InputError(f"missing inputs {missing}; the graph takes {self.input_names}")

    def end_profiling(self) -> str:
        return self.session.end_profiling()


def _is_tensor(value) -> bool:
    """A torch.Tensor, without importing torch: no tensor exists before it is imported."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def session(path, provider: str = "auto", threads: int | None = None) -> Session:
    return Session(path, provider, threads)
