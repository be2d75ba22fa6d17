"""Export the graphs to one self-contained ONNX file each, with ssdonnx metadata."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from . import __version__
from .config import SSDConfig, get_config
from .graphs import INIT_SEED, INPUT_NAMES, KINDS, OUTPUT_NAMES, build_graph, example_inputs
from .postprocess import ONNX_TRANSLATIONS

DEFAULT_OPSET = 18
MIN_OPSET = 18   # NonMaxSuppression-based NMS translation and the exporter's own floor

# Batch size and objects per image of the export example; parity checks use others.
EXPORT_BATCH = 2
EXPORT_OBJECTS = 3


class OnnxFileError(ValueError):
    """An ONNX file that is not ssdonnx's, or not the kind a command needs."""


@dataclass(frozen=True)
class GraphInfo:
    """What an ssdonnx ONNX file says about itself (from its metadata_props)."""
    path: Path
    kind: str
    config: SSDConfig
    version: str
    thresholds: dict
    weights: str           # "seed:N" for seeded initialisation, else "sha256:..."
    opset: int


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


def export_graph(kind: str, config: str | SSDConfig, output, weights=None,
                 opset: int = DEFAULT_OPSET, force: bool = False,
                 thresholds: dict | None = None) -> Path:
    """Export one graph to ``output`` (a single .onnx file, no external data).

    The file is written to a temporary name beside ``output`` and renamed when complete,
    so a failure never leaves a partial file; an existing file is replaced only with
    ``force``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset: {opset} is too old; ssdonnx needs opset >= {MIN_OPSET}")
    cfg = get_config(config)
    output = Path(output)
    if output.exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force (force=True) to overwrite it")
    graph = build_graph(kind, cfg, weights, thresholds)
    inputs = example_inputs(kind, cfg, EXPORT_BATCH, EXPORT_OBJECTS)
    with _quiet_exporter():
        program = torch.onnx.export(
            graph, tuple(inputs.values()), dynamo=True, opset_version=opset,
            input_names=INPUT_NAMES[kind], output_names=OUTPUT_NAMES[kind],
            dynamic_shapes=dynamic_shapes(kind), custom_translation_table=ONNX_TRANSLATIONS,
            optimize=True, verbose=False)
    proto = program.model_proto
    metadata = {
        "ssdonnx.kind": kind,
        "ssdonnx.config": cfg.to_json(),
        "ssdonnx.version": __version__,
        "ssdonnx.thresholds": json.dumps(graph.thresholds() if kind != "model" else {}),
        "ssdonnx.weights": (f"sha256:{file_sha256(weights)}" if weights is not None
                            else f"seed:{INIT_SEED}"),
    }
    for key, value in metadata.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    proto.doc_string = f"ssdonnx {__version__} {kind} for {cfg.name}"
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    os.close(fd)
    try:
        onnx.save_model(proto, tmp, save_as_external_data=False)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


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
            weights=meta.get("ssdonnx.weights", f"seed:{INIT_SEED}"),
            opset=max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                      default=0))
    except (KeyError, json.JSONDecodeError, ValueError) as exc:
        raise OnnxFileError(f"{path}: unreadable ssdonnx metadata: {exc}") from None
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted and info.kind not in wanted:
        raise OnnxFileError(f"{path} is a {info.kind} graph; this needs a "
                            f"{' or '.join(wanted)} graph")
    return info
