"""Box maths: small pure functions, batched over any leading dimensions.

Formats: ``xyxy`` is (x1, y1, x2, y2), ``cxcywh`` is (cx, cy, w, h); both normalised.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The side ``encode`` takes the log of for a box side that is not positive: such rows
# (x2 <= x1), which the API rejects, can reach an exported graph, and must not give
# log(0) = -inf in a loss there. Every positive side, however small, is encoded exactly.
ENCODE_MIN_SIZE = 1e-6


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU (Jaccard overlap) of xyxy boxes.

    a: Tensor[..., N, 4], b: Tensor[..., M, 4] (leading dimensions broadcast)
    -> Tensor[..., N, M]. As the seed's ``jaccard``: intersection / union, with the
    intersection clamped at 0 and no epsilon.
    """
    # Each coordinate as a contiguous row: broadcasting over the strided columns of an
    # [M, 4] tensor is several times slower on CPU than over contiguous memory.
    ax1, ay1, ax2, ay2 = (c[..., :, None] for c in a.transpose(-1, -2).contiguous().unbind(-2))
    bx1, by1, bx2, by2 = (c[..., None, :] for c in b.transpose(-1, -2).contiguous().unbind(-2))
    # In place on fresh intermediates: NMS calls this on [N, k, k] and each new buffer
    # of that size costs more than the arithmetic.
    iw = torch.minimum(ax2, bx2)
    iw -= torch.maximum(ax1, bx1)
    ih = torch.minimum(ay2, by2)
    ih -= torch.maximum(ay1, by1)
    inter = iw.clamp_(min=0).mul_(ih.clamp_(min=0))                    # [..., N, M]
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)     # box areas
    union -= inter
    return inter.div_(union)


def encode(matched: Tensor, priors: Tensor, variances: tuple[float, float]) -> Tensor:
    """Offsets of xyxy boxes from their priors, as the seed's ``encode``.

    matched: Tensor[..., P, 4] xyxy; priors: Tensor[P, 4] cxcywh -> Tensor[..., P, 4]
    (dcx, dcy, dw, dh). A side that is not positive is taken as ``ENCODE_MIN_SIZE``.
    """
    return encode_features(box_features(matched), priors, variances)


def box_features(boxes: Tensor) -> Tensor:
    """xyxy boxes [..., 4] -> (cx, cy, log w, log h) [..., 4], the part of ``encode``
    that depends on the box alone (a side that is not positive: ``ENCODE_MIN_SIZE``).
    ``match`` computes it once per truth and gathers it per default box."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    size = boxes[..., 2:] - boxes[..., :2]
    return torch.cat([centre, torch.where(size > 0, size, ENCODE_MIN_SIZE).log()], -1)


def encode_features(features: Tensor, priors: Tensor, variances: tuple[float, float]
                    ) -> Tensor:
    """Offsets from ``box_features`` [..., P, 4] of boxes matched to priors [P, 4] cxcywh:
    ((cx, cy) - prior centre) / (v0 * prior size), (log size - log prior size) / v1."""
    # Whole rows of 4, no column slices: on CPU an op on a strided [P, 2] view is ten times
    # slower than on a contiguous [P, 4].
    size = priors[:, 2:].repeat(1, 2)                                      # [P, 4] w h w h
    # Made on the device (torch.tensor([...], device=...) would copy from the host).
    is_size = torch.arange(4, device=priors.device) >= 2                   # F F T T
    prior = torch.where(is_size, size.log(), priors)                       # cx cy log w log h
    scale = torch.where(is_size, variances[1], variances[0] * size)        # v0w v0h v1 v1
    return (features - prior) / scale


def decode(loc: Tensor, priors: Tensor, variances: tuple[float, float]) -> Tensor:
    """Boxes from offsets, as the seed's ``decode``: Tensor[..., P, 4] -> xyxy [..., P, 4]."""
    centre = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], -1)
