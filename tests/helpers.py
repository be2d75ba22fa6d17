"""Shared test inputs: random but valid annotation batches and network outputs."""

import torch

import ssdonnx


def random_boxes(gen: torch.Generator, n: int) -> torch.Tensor:
    """n valid xyxy boxes in [0, 1]: a mix of tiny, huge, ordinary and border-touching."""
    kind = torch.randint(0, 4, (n,), generator=gen)
    size = torch.rand(n, 2, generator=gen) * 0.5 + 0.02
    size = torch.where((kind == 0)[:, None], torch.rand(n, 2, generator=gen) * 0.01 + 1e-3, size)
    size = torch.where((kind == 1)[:, None], torch.rand(n, 2, generator=gen) * 0.2 + 0.8, size)
    x1y1 = torch.rand(n, 2, generator=gen) * (1 - size)
    x1y1 = torch.where((kind == 3)[:, None], torch.zeros(n, 2), x1y1)  # touch the border
    return torch.cat([x1y1, (x1y1 + size).clamp(max=1.0)], 1)


def random_targets(gen: torch.Generator, counts, num_classes: int = 21):
    """The seed's list of [n_i, 5] targets, one per entry of counts."""
    out = []
    for n in counts:
        labels = torch.randint(0, num_classes - 1, (n, 1), generator=gen).float()
        out.append(torch.cat([random_boxes(gen, n), labels], 1))
    return out


def random_predictions(gen: torch.Generator, B: int, P: int, C: int, scale: float = 1.0):
    loc = torch.randn(B, P, 4, generator=gen) * scale
    conf = torch.randn(B, P, C, generator=gen) * 2 * scale
    return loc, conf


_DBOX = {}


def dbox(name: str = "ssd300-voc") -> torch.Tensor:
    if name not in _DBOX:
        _DBOX[name] = ssdonnx.default_boxes(ssdonnx.get_config(name))
    return _DBOX[name]
