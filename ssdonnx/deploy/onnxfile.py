"""What an ssdonnx ONNX file says about itself: its ``metadata_props``, read and written
with the ``onnx`` package alone (no torch), so that ``ssdonnx info`` answers at once.

Metadata comes from a file, and a file can lie: every field is checked for type and size
here, and a file that fails is refused with ``OnnxFileError`` naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..config import SSDConfig
from ..errors import ConfigError, OnnxFileError
from .files import file_sha256

# The graphs ssdonnx writes. ``jetson`` is the detector in the layout jetson-inference
# loads (pytorch-ssd's onnx_export.py): class scores after softmax and decoded corner
# boxes for every default box, NMS left to the application.
KINDS = ("model", "detector", "loss", "jetson")
ALL_KINDS = ("model", "detector", "loss")        # what `export all` writes

# Names of each graph's inputs and outputs in the ONNX file.
INPUT_NAMES = {"model": ["images"], "detector": ["images"], "loss": ["loc", "conf", "targets"],
               "jetson": ["input_0"]}
OUTPUT_NAMES = {"model": ["loc", "conf"], "detector": ["detections", "num_detections"],
                "loss": ["loss_l", "loss_c"], "jetson": ["scores", "boxes"]}

# Seed for the weights of a network exported without a checkpoint: ``verify`` rebuilds
# the same weights from it (the file records it as "seed:0").
INIT_SEED = 0

# A metadata field longer than this is not ssdonnx's (its config is about 1 KB).
MAX_FIELD_CHARS = 100_000
# Thresholds an exported graph records, by kind, and their types.
THRESHOLD_TYPES = {
    "detector": {"conf_thresh": float, "top_k": int, "nms_thresh": float,
                 "max_detections": int},
    "loss": {"jaccard_thresh": float, "neg_pos": int},
    "model": {},
    "jetson": {},
}


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
    # int8 detectors (ssdonnx.deploy.quantize): "int8", the calibration set (folder,
    # pictures, sha256 of the file list) and the float32 network that was quantized.
    precision: str = "float32"
    calibration: dict | None = None
    float_source: dict | None = None
    # Names of initializers stored outside the file (ssdonnx never writes any).
    external_data: tuple[str, ...] = ()


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


def set_metadata(proto, metadata: dict[str, str]) -> None:
    """Set (add or replace) ``metadata_props`` entries of an ``onnx.ModelProto``."""
    import onnx

    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    if "ssdonnx.kind" in metadata and "ssdonnx.config" in metadata:
        proto.doc_string = (f"ssdonnx {__version__} {metadata['ssdonnx.kind']} for "
                            f"{json.loads(metadata['ssdonnx.config'])['name']}")


def _json(path: Path, meta: dict, key: str, default: str):
    text = meta.get(key, default)
    if len(text) > MAX_FIELD_CHARS:
        raise OnnxFileError(f"{path}: metadata {key} is {len(text)} characters long; "
                            "not an ssdonnx file")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise OnnxFileError(f"{path}: metadata {key} is not valid JSON ({why})") from None


def _thresholds(path: Path, kind: str, value) -> dict:
    expected = THRESHOLD_TYPES[kind]
    if not isinstance(value, dict) or set(value) - set(expected):
        raise OnnxFileError(f"{path}: metadata ssdonnx.thresholds must be an object with "
                            f"keys from {sorted(expected)}; got {str(value)[:80]}")
    for key, v in value.items():
        ok = isinstance(v, int) and not isinstance(v, bool) if expected[key] is int \
            else isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok or (expected[key] is float and v != v):
            raise OnnxFileError(f"{path}: metadata threshold {key} must be a "
                                f"{expected[key].__name__}, got {str(v)[:40]}")
    return value


def _int8_fields(path: Path, meta: dict) -> tuple[dict, dict]:
    calibration = _json(path, meta, "ssdonnx.calibration", "null")
    source = _json(path, meta, "ssdonnx.float_source", "null")
    fields = {"folder": str, "pictures": int, "files_sha256": str}
    if not isinstance(calibration, dict) or any(
            not isinstance(calibration.get(k), t) for k, t in fields.items()):
        raise OnnxFileError(f"{path}: an int8 detector's metadata ssdonnx.calibration must "
                            f"hold {sorted(fields)}")
    src_fields = {"weights": str, "network_sha256": str, "quantized": list}
    if not isinstance(source, dict) or any(
            not isinstance(source.get(k), t) for k, t in src_fields.items()):
        raise OnnxFileError(f"{path}: an int8 detector's metadata ssdonnx.float_source must "
                            f"hold {sorted(src_fields)}")
    return calibration, source


def load_proto(path):
    """The ``onnx.ModelProto`` of ``path`` without external data, or OnnxFileError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for non-ONNX bytes
        raise OnnxFileError(f"{path} is not an ONNX file ({type(exc).__name__})") from None
    if not proto.graph.node:
        raise OnnxFileError(f"{path} is not an ONNX model (no graph)")
    return proto


def external_initializers(proto) -> tuple[str, ...]:
    import onnx

    return tuple(t.name for t in proto.graph.initializer
                 if t.data_location == onnx.TensorProto.EXTERNAL)


def read_info(path, kind: str | tuple[str, ...] | None = None, proto=None) -> GraphInfo:
    """Read and check an ssdonnx ONNX file's metadata; ``kind`` is what the caller needs."""
    path = Path(path)
    if proto is None:
        proto = load_proto(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    if "ssdonnx.kind" not in meta:
        raise OnnxFileError(f"{path} is an ONNX file without ssdonnx metadata; "
                            "export it with `ssdonnx export`")
    file_kind = meta["ssdonnx.kind"]
    if file_kind not in KINDS:
        raise OnnxFileError(f"{path}: metadata ssdonnx.kind is {file_kind[:40]!r}, not one "
                            f"of {', '.join(KINDS)}")
    try:
        config = SSDConfig.from_dict(_json(path, meta, "ssdonnx.config", "null"),
                                     source=f"{path} metadata")
    except ConfigError as exc:
        raise OnnxFileError(str(exc)) from None
    precision = meta.get("ssdonnx.precision", "float32")
    if precision not in ("float32", "int8") or (precision == "int8" and file_kind != "detector"):
        raise OnnxFileError(f"{path}: metadata ssdonnx.precision {precision[:20]!r} does not "
                            f"fit a {file_kind} graph")
    calibration = source = None
    if precision == "int8":
        calibration, source = _int8_fields(path, meta)
    weights = "none" if file_kind == "loss" else meta.get("ssdonnx.weights", f"seed:{INIT_SEED}")
    if not (weights == "none" or weights.startswith(("seed:", "sha256:"))) \
            or len(weights) > 80:
        raise OnnxFileError(f"{path}: metadata ssdonnx.weights {weights[:40]!r} is neither "
                            "seed:N nor sha256:HEX")
    info = GraphInfo(
        path=path, kind=file_kind, config=config,
        version=meta.get("ssdonnx.version", "?")[:40],
        thresholds=_thresholds(path, file_kind,
                               _json(path, meta, "ssdonnx.thresholds", "{}")),
        weights=weights,
        opset=max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                  default=0),
        precision=precision, calibration=calibration, float_source=source,
        external_data=external_initializers(proto))
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted and info.kind not in wanted:
        raise OnnxFileError(f"{path} is a {info.kind} graph; this needs a "
                            f"{' or '.join(wanted)} graph")
    return info


def expected_shapes(info: GraphInfo) -> dict[str, list]:
    """Each input's and output's shape as the metadata says: ints, or letters for the
    sizes a caller chooses (B, G)."""
    cfg = info.config
    S, P, C = cfg.input_size, cfg.num_priors, cfg.num_classes
    K = info.thresholds.get("max_detections", "K")
    return {"model": {"images": ["B", 3, S, S], "loc": ["B", P, 4], "conf": ["B", P, C]},
            "detector": {"images": ["B", 3, S, S], "detections": ["B", K, 6],
                         "num_detections": ["B"]},
            "loss": {"loc": ["B", P, 4], "conf": ["B", P, C], "targets": ["B", "G", 5],
                     "loss_l": [], "loss_c": []},
            "jetson": {"input_0": ["B", 3, S, S], "scores": ["B", P, C],
                       "boxes": ["B", P, 4]}}[info.kind]


def check_runnable(info: GraphInfo, proto=None) -> None:
    """Refuse a file whose graph does not fit what its metadata says: data stored
    outside the file (ssdonnx writes none), or inputs and outputs that are not the
    kind's, in names or in their fixed sizes."""
    if info.external_data:
        raise OnnxFileError(f"{info.path} keeps {len(info.external_data)} tensors in external "
                            "data files; ssdonnx's files are self-contained: not running it")
    proto = proto if proto is not None else load_proto(info.path)
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != INPUT_NAMES[info.kind] or outputs != OUTPUT_NAMES[info.kind]:
        raise OnnxFileError(f"{info.path}: a {info.kind} graph takes {INPUT_NAMES[info.kind]} "
                            f"and gives {OUTPUT_NAMES[info.kind]}; this one takes {inputs} "
                            f"and gives {outputs}")
    expected = expected_shapes(info)
    for value in [*proto.graph.input, *proto.graph.output]:
        want = expected[value.name]
        dims = value.type.tensor_type.shape.dim
        got = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
        fits = len(got) == len(want) and all(
            isinstance(w, str) or g == w for g, w in zip(got, want))
        if not fits:
            raise OnnxFileError(f"{info.path}: {value.name} has shape {got[:8]}, but its "
                                f"metadata ({info.config.name}) says {want}")


def printable(text, limit: int = 200) -> str:
    """``text`` safe for a terminal: control characters escaped, cut at ``limit``."""
    text = str(text)
    cut = len(text) > limit
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return text + (f"... (cut at {limit} characters)" if cut else "")


def describe(info: GraphInfo, proto=None) -> str:
    """What ``ssdonnx info`` prints about a file (every metadata string made printable)."""
    import onnx

    proto = proto if proto is not None else load_proto(info.path)
    cfg = info.config
    weights = "none (a loss graph has no parameters)" if info.kind == "loss" else info.weights
    lines = [f"file:       {printable(info.path)}", f"kind:       {info.kind}",
             f"config:     {printable(cfg.name, 80)} (input {cfg.input_size}, "
             f"{cfg.num_classes} classes, P = {cfg.num_priors})",
             f"opset:      {info.opset}", f"ssdonnx:    {printable(info.version, 40)}",
             f"weights:    {printable(weights, 80)}"]
    if info.thresholds:
        lines.append("thresholds: " + ", ".join(f"{k}={v}" for k, v in info.thresholds.items()))
    lines.append(f"precision:  {info.precision}")
    if info.precision == "int8":
        cal, src = info.calibration, info.float_source
        lines.append(f"calibration: {cal['pictures']} pictures from {printable(cal['folder'])} "
                     f"(file list sha256 {printable(cal['files_sha256'][:16])}...)")
        lines.append(f"float32 source: network sha256 {printable(src['network_sha256'][:16])}"
                     f"... from weights {printable(src['weights'], 80)}; quantized "
                     f"{printable(', '.join(map(str, src['quantized'])), 80)} (the detection "
                     "head is float32); for CPUExecutionProvider")
    if info.external_data:
        lines.append(f"WARNING: {len(info.external_data)} tensors are stored in external data "
                     "files; ssdonnx never writes such files, and will not run this one")
    for label, values in (("inputs", proto.graph.input), ("outputs", proto.graph.output)):
        lines.append(f"{label}:")
        for v in values:
            dims = "[" + ", ".join(printable(d.dim_param, 20) or str(d.dim_value)
                                   for d in v.type.tensor_type.shape.dim) + "]"
            dtype = onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()
            lines.append(f"  {printable(v.name, 40):16s} {dtype:8s} {dims}")
    return "\n".join(lines)
