"""The three exportable graphs, built by composition, their example inputs, and their
translation to ONNX (torch.onnx's dynamo exporter with ssdonnx's custom operators)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch import Tensor, nn

from .. import loss, postprocess
from ..boxes import decode
from ..config import SSDConfig
from ..errors import InputError
from ..loss import MultiBoxLoss
from ..model import load_weights
from ..networks import build_model
from ..postprocess import SSDDetector
from ..priors import default_boxes
from .onnxfile import INIT_SEED, INPUT_NAMES, KINDS, OUTPUT_NAMES, graph_metadata, set_metadata

# ssdonnx's custom operators and the ONNX functions they export as.
ONNX_TRANSLATIONS = {**loss.ONNX_TRANSLATIONS, **postprocess.ONNX_TRANSLATIONS}

DEFAULT_OPSET = 18
# The exporter's own floor, and NonMaxSuppression's version of the NMS translation; the
# translations are written against opset 18, the newest the exporter writes as of torch 2.13.
MIN_OPSET = MAX_OPSET = 18

# Batch size and objects per image of the export example; parity checks use others.
EXPORT_BATCH = 2
EXPORT_OBJECTS = 3
# The dynamic sizes' bounds, as torch.export wants them.
MAX_BATCH = 4096
MAX_OBJECTS = 4096


class LossGraph(nn.Module):
    """(loc [B, P, 4], conf [B, P, C], targets [B, G, 5]) -> (loss_l, loss_c) scalars,
    with the default boxes as a constant."""

    def __init__(self, cfg: SSDConfig, jaccard_thresh: float = 0.5, neg_pos: int = 3):
        super().__init__()
        self.register_buffer("dbox", default_boxes(cfg), persistent=False)
        self.criterion = MultiBoxLoss(jaccard_thresh, neg_pos, variances=cfg.variances,
                                      num_classes=cfg.num_classes)

    def thresholds(self) -> dict:
        return dict(jaccard_thresh=self.criterion.jaccard_thresh,
                    neg_pos=self.criterion.negpos_ratio)

    def forward(self, loc: Tensor, conf: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        return self.criterion((loc, conf, self.dbox), targets)


class JetsonGraph(nn.Module):
    """The detector in the layout of pytorch-ssd's onnx_export.py, which jetson-inference
    loads: images [B, 3, S, S] -> (scores [B, P, C] after softmax, boxes [B, P, 4]
    decoded, (x1, y1, x2, y2) normalised). No NMS: the application does it."""

    def __init__(self, model: nn.Module, cfg: SSDConfig):
        super().__init__()
        self.model = model
        self.variances = cfg.variances
        self.register_buffer("dbox", default_boxes(cfg), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        loc, conf = self.model(images)
        return conf.softmax(-1), decode(loc, self.dbox, self.variances)


def build_network(cfg: SSDConfig, weights=None) -> nn.Module:
    """The network of ``cfg`` in eval mode: from a checkpoint, or seeded initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = build_model(cfg)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def build_graph(kind: str, cfg: SSDConfig, weights=None, thresholds: dict | None = None
                ) -> nn.Module:
    thresholds = thresholds or {}
    if kind == "model":
        return build_network(cfg, weights)
    if kind == "detector":
        return SSDDetector(build_network(cfg, weights), cfg, **thresholds).eval()
    if kind == "loss":
        return LossGraph(cfg, **thresholds).eval()
    if kind == "jetson":
        return JetsonGraph(build_network(cfg, weights), cfg).eval()
    raise InputError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def normalised(pixels: Tensor, cfg: SSDConfig) -> Tensor:
    """Pixel values 0..255 [..., 3, S, S] as the network of ``cfg`` takes them: minus
    its pixel mean, over its pixel std (``transforms.preprocess_for``'s arithmetic)."""
    mean = torch.tensor(cfg.pixel_mean).view(3, 1, 1)
    return (pixels - mean) / torch.tensor(cfg.pixel_std).view(3, 1, 1)


def example_inputs(kind: str, cfg: SSDConfig, batch: int = 2, objects: int = 3,
                   seed: int = 0) -> dict[str, Tensor]:
    """Random inputs for a graph: images like pre-processed photos; for the loss, network
    outputs and a padded batch of valid targets with `objects` rows (some padding)."""
    gen = torch.Generator().manual_seed(seed)
    if kind in ("model", "detector", "jetson"):
        S = cfg.input_size
        pixels = torch.rand(batch, 3, S, S, generator=gen) * 255
        return {INPUT_NAMES[kind][0]: normalised(pixels, cfg)}
    P, C = cfg.num_priors, cfg.num_classes
    loc = torch.randn(batch, P, 4, generator=gen)
    conf = torch.randn(batch, P, C, generator=gen) * 2
    size = torch.rand(batch, objects, 2, generator=gen) * 0.6 + 0.02
    x1y1 = torch.rand(batch, objects, 2, generator=gen) * (1 - size)
    labels = torch.randint(0, C - 1, (batch, objects, 1), generator=gen).float()
    # The last image keeps only its first row; the rest of it is padding.
    if objects > 1 and batch > 1:
        labels[-1, 1:] = -1
    targets = torch.cat([x1y1, x1y1 + size, labels], 2)
    targets = torch.where(labels == -1, torch.tensor([0.0, 0, 0, 0, -1]), targets)
    return {"loc": loc, "conf": conf, "targets": targets}


def batch_dim(name: str = "B") -> torch.export.Dim:
    return torch.export.Dim(name, min=1, max=MAX_BATCH)


def dynamic_shapes(kind: str) -> dict:
    B = batch_dim()
    if kind == "loss":
        G = torch.export.Dim("G", min=0, max=MAX_OBJECTS)
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


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"opset: {opset} is not supported; ssdonnx writes opset "
                         f"{MIN_OPSET}" + (f" to {MAX_OPSET}" if MAX_OPSET > MIN_OPSET else ""))
    return opset


def to_onnx(module: nn.Module, inputs: dict, output_names: list[str],
            dynamic_shapes: dict, opset: int = DEFAULT_OPSET):
    """``module`` as an ``onnx.ModelProto`` (torch.onnx's dynamo exporter with ssdonnx's
    custom operators), input names the keys of ``inputs``."""
    check_opset(opset)
    with _quiet_exporter():
        program = torch.onnx.export(
            module, tuple(inputs.values()), dynamo=True, opset_version=opset,
            input_names=list(inputs), output_names=output_names,
            dynamic_shapes=dynamic_shapes, custom_translation_table=ONNX_TRANSLATIONS,
            optimize=True, verbose=False)
    proto = program.model_proto
    written = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                  default=0)
    if written != opset:   # the exporter may fall back silently; never label it wrongly
        raise RuntimeError(f"torch.onnx wrote opset {written} when asked for {opset}")
    return proto


def graph_proto(kind: str, cfg: SSDConfig, weights=None, opset: int = DEFAULT_OPSET,
                thresholds: dict | None = None):
    """One of the three graphs in ONNX, with ssdonnx's metadata."""
    graph = build_graph(kind, cfg, weights, thresholds)
    inputs = example_inputs(kind, cfg, EXPORT_BATCH, EXPORT_OBJECTS)
    proto = to_onnx(graph, dict(zip(INPUT_NAMES[kind], inputs.values())), OUTPUT_NAMES[kind],
                    dynamic_shapes(kind), opset)
    set_metadata(proto, graph_metadata(kind, cfg, weights, graph.thresholds()
                                       if kind in ("detector", "loss") else {}))
    return proto
