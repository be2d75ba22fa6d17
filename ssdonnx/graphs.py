"""The three exportable graphs, built by composition, and their example inputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import SSDConfig
from .loss import MultiBoxLoss
from .model import SSD, load_weights
from .postprocess import SSDDetector
from .priors import default_boxes

KINDS = ("model", "detector", "loss")

# Names of each graph's inputs and outputs in the ONNX file.
INPUT_NAMES = {"model": ["images"], "detector": ["images"], "loss": ["loc", "conf", "targets"]}
OUTPUT_NAMES = {"model": ["loc", "conf"], "detector": ["detections", "num_detections"],
                "loss": ["loss_l", "loss_c"]}

# Seed for the weights of a network exported without a checkpoint: ``verify`` rebuilds
# the same weights from it (the file records it).
INIT_SEED = 0


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


def build_network(cfg: SSDConfig, weights=None) -> SSD:
    """SSD for ``cfg`` in eval mode: from a checkpoint, or seeded initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = SSD(cfg)
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
    raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def example_inputs(kind: str, cfg: SSDConfig, batch: int = 2, objects: int = 3,
                   seed: int = 0) -> dict[str, Tensor]:
    """Random inputs for a graph: images like pre-processed photos; for the loss, network
    outputs and a padded batch of valid targets with `objects` rows (some padding)."""
    gen = torch.Generator().manual_seed(seed)
    if kind in ("model", "detector"):
        S = cfg.input_size
        return {"images": torch.rand(batch, 3, S, S, generator=gen) * 255 - 117}
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
