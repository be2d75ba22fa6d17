"""Detection head: softmax, decode, per-class top-k and greedy NMS, best K per image.

NMS is the custom operator ``ssdonnx::nms``: a vectorised greedy NMS in eager PyTorch
(any device) and ONNX ``NonMaxSuppression`` in exported graphs, so the same ``detect``
serves both without torchvision and without an export mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import checks
from .boxes import box_iou, decode
from .config import SSDConfig
from .priors import default_boxes

# Score threshold, candidates per class, IoU threshold and detections per image of the
# seed's Detect (ssd.pytorch: conf_thresh 0.01, top_k 200, nms_thresh 0.45).
CONF_THRESH = 0.01
TOP_K = 200
NMS_THRESH = 0.45
MAX_DETECTIONS = 200
# top_k and max_detections at most this (the head's tensors grow with both).
MAX_COUNT = 10_000


def nms_kernel(boxes: Tensor, scores: Tensor, iou_threshold: float,
               score_threshold: float) -> Tensor:
    """Greedy NMS over N independent sets of candidates: the eager kernel of the custom
    operator ``nms`` below (which callers use).

    boxes: Tensor[N, k, 4] xyxy; scores: Tensor[N, k] -> keep: bool Tensor[N, k].
    Candidates with score <= score_threshold are dropped; in decreasing score order,
    a candidate is kept unless its IoU with an already kept one exceeds iou_threshold
    (the seed's ``nm_suppression`` keeps IoU <= threshold).

    The eager kernel differs by device, the result does not: on the CPU it reads on the
    host how many candidates pass the score threshold and stops iterating once nothing
    changes; elsewhere (CUDA) it reads nothing back, which would wait for the GPU, and
    scans all k candidates once. The exported graph runs ONNX NonMaxSuppression.
    """
    N, k = scores.shape
    order = scores.argsort(1, descending=True)                                 # [N, k]
    sorted_scores = scores.gather(1, order)
    valid = sorted_scores > score_threshold                                     # [N, k]
    # Valid candidates are a prefix of each sorted row: only the longest prefix needs
    # IoUs. Its length is data, read on the host: the CPU kernel only.
    on_cpu = boxes.device.type == "cpu"
    m = (int(valid.sum(1).max()) if N else 0) if on_cpu else k
    keep_sorted = torch.zeros_like(valid)
    if m:
        top = order[:, :m]
        sorted_boxes = boxes.gather(1, top[..., None].expand(N, m, 4))          # [N, m, 4]
        later = torch.ones(m, m, dtype=torch.bool, device=boxes.device).triu(1)
        suppresses = (box_iou(sorted_boxes, sorted_boxes) > iou_threshold) & later
        greedy = greedy_fixed_point if on_cpu else greedy_scan
        keep_sorted[:, :m] = greedy(valid[:, :m], suppresses)
    return torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)


nms = torch.library.custom_op("ssdonnx::nms", nms_kernel, mutates_args=())


def greedy_fixed_point(valid: Tensor, suppresses: Tensor) -> Tensor:
    """Greedy NMS from a suppression matrix: valid bool [N, m] in score order,
    suppresses bool [N, m, m] (row j suppresses column i > j) -> kept bool [N, m].

    Greedy NMS is the unique fixed point of "kept = valid and not suppressed by a kept
    higher-scored box": iterating from all-valid fixes at least one more position per
    step, so the loop ends after at most m steps, usually a handful. Each step reads
    one bool on the host (whether anything changed): for the CPU."""
    suppresses = suppresses.to(torch.float32)
    alive = valid
    for _ in range(valid.shape[1] + 1):
        hit = torch.bmm(alive[:, None].to(suppresses.dtype), suppresses)[:, 0] > 0
        new = valid & ~hit
        if torch.equal(new, alive):
            break
        alive = new
    return alive


def greedy_scan(valid: Tensor, suppresses: Tensor) -> Tensor:
    """``greedy_fixed_point``'s result in one pass over the m positions, reading nothing
    back to the host (for CUDA): position i is decided from the already decided
    positions before it."""
    kept = valid.clone()
    for i in range(1, valid.shape[1]):
        hit = (suppresses[:, :i, i] & kept[:, :i]).any(1)                      # [N]
        kept[:, i] &= ~hit
    return kept


@nms.register_fake
def _nms_fake(boxes, scores, iou_threshold, score_threshold):
    return torch.empty(scores.shape, dtype=torch.bool, device=scores.device)


def nms_onnx(boxes, scores, iou_threshold: float, score_threshold: float):
    """ONNX translation of ``ssdonnx::nms``: NonMaxSuppression, then a keep mask."""
    from onnxscript import opset18 as op  # only when exporting: it costs seconds
    N_k = op.Shape(scores)
    k = op.Shape(scores, start=1, end=2)
    selected = op.NonMaxSuppression(
        boxes, op.Unsqueeze(scores, [1]), k,
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]))                          # [M, 3]
    where = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)        # [M, 2]
    ones = op.Expand(op.Constant(value_float=1.0), op.Shape(selected, start=0, end=1))
    zeros = op.Expand(op.Constant(value_float=0.0), N_k)
    return op.Cast(op.ScatterND(zeros, where, ones), to=9)                     # BOOL


ONNX_TRANSLATIONS = {torch.ops.ssdonnx.nms.default: nms_onnx}


def check_thresholds(conf_thresh, top_k, nms_thresh, max_detections) -> dict:
    """The detection head's settings, checked: scores and IoUs in [0, 1], counts >= 1."""
    return dict(conf_thresh=checks.check_fraction(conf_thresh, "conf_thresh"),
                top_k=checks.check_count(top_k, "top_k", 1, MAX_COUNT),
                nms_thresh=checks.check_fraction(nms_thresh, "nms_thresh"),
                max_detections=checks.check_count(max_detections, "max_detections", 1,
                                                  MAX_COUNT))


def candidates(loc: Tensor, conf: Tensor, dbox: Tensor,
               variances: tuple[float, float] = (0.1, 0.2)) -> tuple[Tensor, Tensor]:
    """What the detection head chooses from: boxes [B, P, 4] decoded (x1, y1, x2, y2,
    not clipped) and the foreground scores [B, C-1, P] (softmax over the C classes)."""
    scores = conf.float().softmax(-1)[..., 1:].transpose(1, 2)                 # [B, C-1, P]
    return decode(loc.float(), dbox.float(), variances), scores


def detect(loc: Tensor, conf: Tensor, dbox: Tensor, conf_thresh: float = CONF_THRESH,
           top_k: int = TOP_K, nms_thresh: float = NMS_THRESH,
           max_detections: int = MAX_DETECTIONS,
           variances: tuple[float, float] = (0.1, 0.2), validate: bool = True
           ) -> tuple[Tensor, Tensor]:
    """The seed's Detect, batched: loc [B, P, 4], conf [B, P, C] logits, dbox [P, 4].

    Per image and foreground class: scores > conf_thresh, the top_k best as candidates,
    greedy NMS (drop IoU > nms_thresh with a kept box); then the K = max_detections best
    across classes. Returns detections: Tensor[B, K, 6] rows (x1, y1, x2, y2, score,
    class), boxes clipped to [0, 1] after NMS, class in 1..C-1, sorted by score, then
    rows (0, 0, 0, 0, 0, -1); and num_detections: int64 Tensor[B].
    """
    if validate and not checks.is_exporting():
        checks.check_predictions(loc, conf, dbox)
        check_thresholds(conf_thresh, top_k, nms_thresh, max_detections)
        checks.check_variances(variances)
    B, P, C = conf.shape
    boxes, scores = candidates(loc, conf, dbox, variances)
    k = min(top_k, P)
    cand_scores, cand_idx = scores.topk(k, dim=2)                              # [B, C-1, k]
    cand_idx = cand_idx.reshape(B, (C - 1) * k)
    cand_boxes = boxes.gather(1, cand_idx[..., None].expand(B, (C - 1) * k, 4))
    keep = nms(cand_boxes.reshape(B * (C - 1), k, 4), cand_scores.reshape(B * (C - 1), k),
               nms_thresh, conf_thresh).reshape(B, (C - 1) * k)                # [B, (C-1)k]

    n = min(max_detections, (C - 1) * k)
    ranked = torch.where(keep, cand_scores.reshape(B, (C - 1) * k), -1.0)
    top_scores, top = ranked.topk(n, dim=1)                                    # [B, n]
    kept = keep.gather(1, top)
    top_boxes = cand_boxes.gather(1, top[..., None].expand(B, n, 4)).clamp(0, 1)
    classes = (top // k + 1).to(top_boxes.dtype)
    rows = torch.cat([top_boxes, top_scores[..., None], classes[..., None]], 2)  # [B, n, 6]
    # (0, 0, 0, 0, 0, -1), made on the device rather than copied from the host.
    empty = -(torch.arange(6, device=rows.device) == 5).to(rows.dtype)
    rows = torch.where(kept[..., None], rows, empty)
    if n < max_detections:
        rows = torch.cat([rows, empty.expand(B, max_detections - n, 6)], 1)
    return rows, kept.sum(1)


class DetectionHead(nn.Module):
    """The head alone: (loc [B, P, 4], conf [B, P, C]) -> (detections [B, K, 6],
    num_detections [B]), with the default boxes as a constant."""

    def __init__(self, dbox: Tensor, conf_thresh: float = CONF_THRESH, top_k: int = TOP_K,
                 nms_thresh: float = NMS_THRESH, max_detections: int = MAX_DETECTIONS,
                 variances: tuple[float, float] = (0.1, 0.2)):
        super().__init__()
        checks.check_dbox(dbox)
        settings = check_thresholds(conf_thresh, top_k, nms_thresh, max_detections)
        self.register_buffer("dbox", dbox, persistent=False)
        self.conf_thresh = settings["conf_thresh"]
        self.top_k = settings["top_k"]
        self.nms_thresh = settings["nms_thresh"]
        self.max_detections = settings["max_detections"]
        self.variances = checks.check_variances(variances)

    def thresholds(self) -> dict:
        return dict(conf_thresh=self.conf_thresh, top_k=self.top_k,
                    nms_thresh=self.nms_thresh, max_detections=self.max_detections)

    def forward(self, loc: Tensor, conf: Tensor) -> tuple[Tensor, Tensor]:
        return detect(loc, conf, self.dbox, variances=self.variances, validate=False,
                      **self.thresholds())


class SSDDetector(nn.Module):
    """Network + default boxes + detection head: images [B, 3, H, W] ->
    (detections [B, K, 6], num_detections [B]). This is what exports as the detector."""

    def __init__(self, model: nn.Module, cfg: SSDConfig, conf_thresh: float = CONF_THRESH,
                 top_k: int = TOP_K, nms_thresh: float = NMS_THRESH,
                 max_detections: int = MAX_DETECTIONS):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.head = DetectionHead(default_boxes(cfg), conf_thresh, top_k, nms_thresh,
                                  max_detections, cfg.variances)

    def thresholds(self) -> dict:
        return self.head.thresholds()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(*self.model(images))

    def candidates(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The head's candidates for ``images`` (``candidates``): boxes [B, P, 4] and
        scores [B, C-1, P]."""
        return candidates(*self.model(images), self.head.dbox, self.head.variances)
