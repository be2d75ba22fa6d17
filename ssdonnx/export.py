"""Export the graphs to one self-contained ONNX file each, with ssdonnx metadata."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from . import __version__
from .config import SSDConfig, get_config
from .errors import OnnxFileError, OutputError
from .graphs import INIT_SEED, INPUT_NAMES, KINDS, OUTPUT_NAMES, build_graph, example_inputs
from .loss import ONNX_TRANSLATIONS as LOSS_OPS
from .postprocess import ONNX_TRANSLATIONS as POSTPROCESS_OPS

# ssdonnx's custom operators and the ONNX functions they export as.
ONNX_TRANSLATIONS = {**LOSS_OPS, **POSTPROCESS_OPS}

DEFAULT_OPSET = 18
MIN_OPSET = 18   # NonMaxSuppression-based NMS translation and the exporter's own floor

# Batch size and objects per image of the export example; parity checks use others.
EXPORT_BATCH = 2
EXPORT_OBJECTS = 3


@dataclass(frozen=True)
class GraphInfo:
    """What an ssdonnx ONNX file says about itself (from its metadata_props)."""
    path: Path
    kind: str
    config: SSDConfig
    version: str
    thresholds: dict
    weights: str           # "seed:N" for seeded initialisation, "sha256:...", or "none"
    opset: int
    # int8 detectors (ssdonnx.quantize): "int8", the calibration set (folder, pictures,
    # sha256 of the file list) and the float32 network that was quantized.
    precision: str = "float32"
    calibration: dict | None = None
    float_source: dict | None = None


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dynamic_shapes(kind: str) -> dict:
    B = torch.export.Dim("B", min=1, max=4096)
    if kind == "loss":
        G = torch.export.Dim("G", min=0, max=4096)
        return {"loc": {0: B}, "conf": {0: B}, "targets": {0: B, 1: G}}
    return {"images": {0: B}}


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx prints its steps and warns about torchvision, which we never use."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_destination(output, force: bool = False) -> Path:
    """Refuse, before any work, an ``output`` file that cannot be written: an existing
    file without ``force``, a folder, or a folder that cannot be created."""
    output = Path(output)
    if output.is_dir():
        raise OutputError(f"{output} is a folder; expected the path of the .onnx file "
                          "to write")
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force (force=True) to overwrite it")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {output.parent}: "
                          f"{exc.strerror or exc}") from None
    return output


@contextlib.contextmanager
def atomic_output(output: Path):
    """Yield a new temporary path beside ``output``; on leaving the block without error
    it replaces ``output``, on any error or interrupt it is removed. The temporary file
    is created at once (so an unwritable folder fails before any work), with the mode
    any new file gets: 0o666 less the umask."""
    output = Path(output)
    tmp = output.parent / f".{output.name}.{secrets.token_hex(4)}.partial"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise OutputError(f"cannot write in {output.parent}: {exc.strerror or exc}") \
            from None
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def export_graph(kind: str, config: str | SSDConfig, output, weights=None,
                 opset: int = DEFAULT_OPSET, force: bool = False,
                 thresholds: dict | None = None, check=None, calibration=None,
                 calibration_images: int | None = None, progress=None) -> Path:
    """Export one graph to ``output`` (a single .onnx file, no external data).

    The file is written to a temporary name beside ``output``; ``check(path)``, if
    given, runs on that file and may raise (a parity failure, say); only then does the
    file replace ``output``. A failure or an interrupt never leaves a partial file and
    never touches an existing ``output``, which is replaced only with ``force``.

    ``calibration`` (a folder of pictures or a VOC-layout data set) makes an int8
    detector: see ``ssdonnx.quantize``; ``progress(n)`` is called as pictures calibrate.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset: {opset} is too old; ssdonnx needs opset >= {MIN_OPSET}")
    if calibration is not None and kind != "detector":
        raise ValueError(f"calibration: int8 quantization is for the detector, not {kind}")
    cfg = get_config(config)
    output = check_destination(output, force)
    if calibration is not None:
        from .quantize import calibration_pictures, int8_detector

        pictures = calibration_pictures(calibration, calibration_images)
    with atomic_output(output) as tmp:
        if calibration is None:
            proto = graph_proto(kind, cfg, weights, opset, thresholds)
        else:
            proto = int8_detector(cfg, weights, pictures, calibration, opset, thresholds,
                                  progress)
        onnx.save_model(proto, tmp, save_as_external_data=False)
        if check is not None:
            check(tmp)
    return output


def to_onnx(module: torch.nn.Module, inputs: dict, output_names: list[str],
            dynamic_shapes: dict, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """``module`` in ONNX (torch.onnx's dynamo exporter, ssdonnx's custom operators)."""
    with _quiet_exporter():
        program = torch.onnx.export(
            module, tuple(inputs.values()), dynamo=True, opset_version=opset,
            input_names=list(inputs), output_names=output_names,
            dynamic_shapes=dynamic_shapes, custom_translation_table=ONNX_TRANSLATIONS,
            optimize=True, verbose=False)
    return program.model_proto


def graph_proto(kind: str, cfg: SSDConfig, weights=None, opset: int = DEFAULT_OPSET,
                thresholds: dict | None = None) -> onnx.ModelProto:
    """One of the three graphs in ONNX, with ssdonnx's metadata."""
    graph = build_graph(kind, cfg, weights, thresholds)
    inputs = example_inputs(kind, cfg, EXPORT_BATCH, EXPORT_OBJECTS)
    proto = to_onnx(graph, dict(zip(INPUT_NAMES[kind], inputs.values())), OUTPUT_NAMES[kind],
                    dynamic_shapes(kind), opset)
    set_metadata(proto, graph_metadata(kind, cfg, weights,
                                       graph.thresholds() if kind != "model" else {}))
    return proto


def graph_metadata(kind: str, cfg: SSDConfig, weights, thresholds: dict) -> dict[str, str]:
    metadata = {
        "ssdonnx.kind": kind,
        "ssdonnx.config": cfg.to_json(),
        "ssdonnx.version": __version__,
        "ssdonnx.thresholds": json.dumps(thresholds),
    }
    if kind != "loss":   # the loss has no parameters
        metadata["ssdonnx.weights"] = (f"sha256:{file_sha256(weights)}" if weights is not None
                                       else f"seed:{INIT_SEED}")
    return metadata


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Set (add or replace) ``metadata_props`` entries."""
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    if "ssdonnx.kind" in metadata:
        proto.doc_string = (f"ssdonnx {__version__} {metadata['ssdonnx.kind']} for "
                            f"{json.loads(metadata['ssdonnx.config'])['name']}")


def read_info(path, kind: str | tuple[str, ...] | None = None) -> GraphInfo:
    """Read and check an ssdonnx ONNX file's metadata; ``kind`` is what the caller needs."""
    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for non-ONNX bytes
        raise OnnxFileError(f"{path} is not an ONNX file ({type(exc).__name__})") from None
    if not proto.graph.node:
        raise OnnxFileError(f"{path} is not an ONNX model (no graph)")
    meta = {p.key: p.value for p in proto.metadata_props}
    if "ssdonnx.kind" not in meta:
        raise OnnxFileError(f"{path} is an ONNX file without ssdonnx metadata; "
                            "export it with `ssdonnx export`")
    try:
        info = GraphInfo(
            path=path, kind=meta["ssdonnx.kind"],
            config=SSDConfig.from_dict(json.loads(meta["ssdonnx.config"]),
                                       source=f"{path} metadata"),
            version=meta.get("ssdonnx.version", "?"),
            thresholds=json.loads(meta.get("ssdonnx.thresholds", "{}")),
            weights="none" if meta["ssdonnx.kind"] == "loss" else
            meta.get("ssdonnx.weights", f"seed:{INIT_SEED}"),
            opset=max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                      default=0),
            precision=meta.get("ssdonnx.precision", "float32"),
            calibration=json.loads(meta.get("ssdonnx.calibration", "null")),
            float_source=json.loads(meta.get("ssdonnx.float_source", "null")))
    except (KeyError, json.JSONDecodeError, ValueError) as exc:
        raise OnnxFileError(f"{path}: unreadable ssdonnx metadata: {exc}") from None
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted and info.kind not in wanted:
        raise OnnxFileError(f"{path} is a {info.kind} graph; this needs a "
                            f"{' or '.join(wanted)} graph")
    return info
