"""Default boxes (DBox, priors) in the seed's order."""

from __future__ import annotations

import torch
from torch import Tensor

from .config import SSDConfig


def default_boxes(cfg: SSDConfig) -> Tensor:
    """Default boxes of ``cfg``: Tensor[P, 4], (cx, cy, w, h) normalised to [0, 1].

    Order as in the seed's DBox: source map, then row i, column j, then per cell the
    small square, the large square (sqrt(min * max)), and for each aspect ratio r the
    boxes (sqrt(r), 1/sqrt(r)) and (1/sqrt(r), sqrt(r)) relative to the small square.
    Computed in float64 and returned as float32, so values match the seed's float list.
    """
    per_map = []
    for f, step, smin, smax, ars in zip(cfg.feature_maps, cfg.steps, cfg.min_sizes,
                                        cfg.max_sizes, cfg.aspect_ratios):
        f_k = cfg.input_size / step
        centres = (torch.arange(f, dtype=torch.float64) + 0.5) / f_k
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")            # [f, f]
        s_k = smin / cfg.input_size
        s_big = (s_k * (smax / cfg.input_size)) ** 0.5
        sizes = [(s_k, s_k), (s_big, s_big)]
        for r in ars:
            sizes += [(s_k * r ** 0.5, s_k / r ** 0.5), (s_k / r ** 0.5, s_k * r ** 0.5)]
        wh = torch.tensor(sizes, dtype=torch.float64)                        # [A, 2]
        A = wh.shape[0]
        centre = torch.stack([cx, cy], -1).reshape(f * f, 1, 2).expand(f * f, A, 2)
        size = wh.reshape(1, A, 2).expand(f * f, A, 2)
        per_map.append(torch.cat([centre, size], -1).reshape(-1, 4))         # [f*f*A, 4]
    out = torch.cat(per_map)                                                 # [P, 4]
    if cfg.clip:
        out = out.clamp(0, 1)
    return out.float()
