"""The network of a config: ``cfg.network`` names the design."""

from __future__ import annotations

from torch import nn

from .config import SSDConfig


def build_model(cfg: SSDConfig, validate: bool = True) -> nn.Module:
    """The network of ``cfg.network``: the seed's ``SSD`` (``ssdonnx.model``), or one of
    pytorch-ssd's designs (``ssdonnx.mobilenet.PytorchSSD``). Every one maps images
    [B, 3, S, S] to (loc [B, P, 4], conf [B, P, C])."""
    if cfg.network == "seed-vgg16":
        from .model import SSD

        return SSD(cfg, validate)
    from .mobilenet import PytorchSSD

    return PytorchSSD(cfg, validate)
