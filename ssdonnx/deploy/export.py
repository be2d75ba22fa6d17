"""Checked export: each graph to one self-contained ONNX file, written under a temporary
name, checked there (``onnx.checker``, then parity with PyTorch in onnxruntime), and only
then renamed over the output. A failed check or an interrupt leaves an existing output
as it was; an existing output is replaced only with ``force``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import SSDConfig
from ..errors import InputError, OutputError, ParityError
from ..model import config_for
from . import files
from .graphs import DEFAULT_OPSET, check_opset
from .onnxfile import ALL_KINDS, KINDS
from .parity import Verification, verify


@dataclass
class Exported:
    path: Path
    kind: str
    config: SSDConfig
    precision: str
    seconds: float
    check: Verification | None   # None with verify=False

    def summary(self) -> str:
        size = self.path.stat().st_size / 1e6
        return f"wrote {self.path} ({size:.1f} MB) in {self.seconds:.1f}s"


def default_output(kind: str, cfg: SSDConfig) -> Path:
    """Where ``ssdonnx export`` writes without ``--output``: models/<config>/<kind>.onnx
    under the current folder."""
    return Path("models") / cfg.name / f"{kind}.onnx"


def _log(log: Callable[[str], None] | None, message: str) -> None:
    if log is not None:
        log(message)


def _check_options(kind: str, calibration, int8_needs_detector: bool = True) -> None:
    if kind not in KINDS:
        raise InputError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if calibration is not None and kind != "detector" and int8_needs_detector:
        raise InputError(f"calibration: int8 quantization is for the detector, not {kind}")


def export(kind: str, output=None, config: str | SSDConfig | None = None, weights=None,
           *, labels=None, opset: int = DEFAULT_OPSET, force: bool = False,
           verify_file: bool = True, thresholds: dict | None = None, calibration=None,
           calibration_images: int | None = None, log=None, progress=None) -> Exported:
    """Export one graph (``model``, ``detector``, ``loss`` or ``jetson``: the detector in
    jetson-inference's layout) to ``output`` and check it.

    output: the .onnx file [default: models/<config>/<kind>.onnx under the current
    folder]. weights: a checkpoint for the network (model, detector). config: a preset,
    JSON file or SSDConfig [default: the one a checkpoint of ``ssdonnx train`` carries,
    else ``ssd300-voc`` with the class count of the checkpoint's heads; see
    ``model.config_for``, which also takes ``labels``, the class names]. ``calibration``
    (a folder of pictures or a VOC-layout data set) makes an int8 detector
    (``ssdonnx.deploy.quantize``), checked by agreement with float32 instead of parity.
    ``verify_file=False`` skips the checks. ``log(message)`` hears each step;
    ``progress(n, total)`` is called as calibration pictures are read.

    Raises ``ParityError`` (holding the verification) when the check fails: then nothing
    is written and an existing output stays as it was.
    """
    _check_options(kind, calibration)
    check_opset(opset)
    cfg = config_for(config, weights, labels)
    output = files.check_destination(output if output is not None
                                     else default_output(kind, cfg), force)
    pictures = None
    if calibration is not None:
        from .quantize import calibration_pictures

        pictures = calibration_pictures(calibration, calibration_images)
    return _export_checked(kind, cfg, output, weights, opset, verify_file, thresholds,
                           calibration, pictures, log, progress)


def _export_checked(kind, cfg, output, weights, opset, verify_file, thresholds,
                    calibration, pictures, log, progress) -> Exported:
    import onnx

    from .graphs import graph_proto

    t0 = time.perf_counter()
    _log(log, f"exporting {kind}{' (int8)' if pictures else ''} for {cfg.name} "
              f"(opset {opset})")
    network_weights = weights if kind != "loss" else None
    check = None
    with files.atomic_output(output) as tmp:
        if pictures is None:
            proto = graph_proto(kind, cfg, network_weights, opset, thresholds)
        else:
            from .quantize import int8_detector

            proto = int8_detector(cfg, weights, pictures, calibration, opset, thresholds,
                                  progress)
        onnx.save_model(proto, tmp, save_as_external_data=False)
        if verify_file:
            _log(log, f"onnx.checker (full check) on {output}")
            onnx.checker.check_model(str(tmp), full_check=True)
            check = verify(tmp, network_weights, "cpu", name=output, log=log)
            if not check.passed:
                raise ParityError(check)
    return Exported(output, kind, cfg, "int8" if pictures else "float32",
                    time.perf_counter() - t0, check)


def export_all(folder=None, config: str | SSDConfig | None = None, weights=None, *,
               labels=None, opset: int = DEFAULT_OPSET, force: bool = False,
               verify_file: bool = True, log=None) -> list[Exported]:
    """The network, the detector and the loss into ``folder`` [default:
    models/<config>/] as model.onnx, detector.onnx and loss.onnx, each checked
    (``config``, ``weights`` and ``labels`` as for ``export``).

    Every destination is checked before any work. A graph that fails its check is not
    written, the others are; ``ParityError`` then names the failed ones.
    """
    check_opset(opset)
    cfg = config_for(config, weights, labels)
    folder = Path(folder) if folder is not None else default_output("model", cfg).parent
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--output {folder} is a file; for `export all` it is the folder "
                          "to write model.onnx, detector.onnx and loss.onnx in")
    outputs = [files.check_destination(folder / f"{k}.onnx", force) for k in ALL_KINDS]
    files.check_writable(folder)
    done, failed = [], []
    for kind, output in zip(ALL_KINDS, outputs):
        try:
            done.append(_export_checked(kind, cfg, output, weights, opset, verify_file,
                                        None, None, None, log, None))
        except ParityError as exc:
            failed.append(exc)
        else:
            _log(log, done[-1].summary())
    if failed:
        raise ParityError(*[v for exc in failed for v in exc.verifications])
    return done
