"""The SSDs of qfgaohao/pytorch-ssd, which NVIDIA's jetson-inference trains and deploys:
MobileNetV1-SSD (``mb1-ssd``), MobileNetV2-SSDLite (``mb2-ssd-lite``) and its VGG16-SSD
(``vgg16-ssd``), built module for module as pytorch-ssd builds them, so that its
state_dicts load strictly (``base_net.*``, ``source_layer_add_ons.*``, ``extras.*``,
``classification_headers.*``, ``regression_headers.*``) and give its outputs.

What they are, from pytorch-ssd's ``vision/ssd/*.py`` and ``vision/nn/*.py``:

- ``mb1-ssd``: MobileNetV1's 14 layers (a 3x3 conv of stride 2, then 13 depthwise
  separable blocks, BatchNorm and ReLU throughout); sources after layer 11 (512
  channels, 19 x 19 at 300) and after the last (1024, 10 x 10); four extras of a 1x1 and
  a 3x3 stride-2 conv with ReLU; 3x3 heads, 6 boxes per cell.
- ``mb2-ssd-lite``: MobileNetV2's 19 feature layers (inverted residuals, ReLU6); the
  first source inside layer 14, after its 1x1 expansion (576 channels, 19 x 19), the
  second after the last layer (1280, 10 x 10); four inverted residuals of stride 2 as
  extras; separable heads (a depthwise 3x3 with BatchNorm and ReLU6, then a 1x1), the
  last head a plain 1x1 conv.
- ``vgg16-ssd``: the seed's VGG16 base and extras, with a BatchNorm on conv4_3 where the
  seed has L2Norm.

Like the seed's network, ``forward`` returns ``(loc [B, P, 4], conf [B, P, C])``, raw
(pytorch-ssd's returns ``(conf, loc)`` in training mode). ``width`` scales the backbone
(pytorch-ssd's ``width_mult`` for MobileNetV2; for MobileNetV1 ssdonnx's own).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import checks
from .config import SSDConfig
from .model import make_vgg, per_box

# MobileNetV1 after its first conv: (output channels, stride) of each depthwise
# separable block (pytorch-ssd's vision/nn/mobilenet.py, the MobileNet paper's table 1).
MOBILENET_V1 = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
# MobileNetV2: (expansion t, channels c, repeats n, first stride s) per stage (the
# MobileNetV2 paper's table 2, pytorch-ssd's vision/nn/mobilenet_v2.py).
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
MOBILENET_V2_LAST = 1280
# Where the sources are taken: after base_net[:index] (and, for mb2-ssd-lite, inside
# layer 14 after the first ``sub`` modules of its ``conv``).
SOURCE_INDEX = {"vgg16-ssd": 23, "mb1-ssd": 12, "mb2-ssd-lite": 14}
MB2_SOURCE_SUB = 3


def _conv_bn(inp: int, oup: int, kernel: int, stride: int, relu: type) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(oup), relu(inplace=True))


def _depthwise_separable(inp: int, oup: int, stride: int) -> nn.Sequential:
    """MobileNetV1's block: depthwise 3x3, BN, ReLU, pointwise 1x1, BN, ReLU."""
    return nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                         nn.BatchNorm2d(inp), nn.ReLU(inplace=True),
                         nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion to ``hidden`` channels (left out when hidden
    equals the input), depthwise 3x3, linear 1x1 projection, BatchNorm after each, ReLU6
    after the first two; plus the input where shape allows (stride 1, inp == oup)."""

    def __init__(self, inp: int, oup: int, stride: int, hidden: int):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != inp:
            layers += [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == oup

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v1(width: float = 1.0) -> nn.Sequential:
    def ch(c):
        return max(1, int(c * width))
    layers = [_conv_bn(3, ch(32), 3, 2, nn.ReLU)]
    inp = ch(32)
    for c, stride in MOBILENET_V1:
        layers.append(_depthwise_separable(inp, ch(c), stride))
        inp = ch(c)
    return nn.Sequential(*layers)


def mobilenet_v2(width: float = 1.0) -> nn.Sequential:
    inp = int(32 * width)
    layers: list[nn.Module] = [_conv_bn(3, inp, 3, 2, nn.ReLU6)]
    for t, c, n, s in MOBILENET_V2:
        oup = int(c * width)
        for i in range(n):
            layers.append(InvertedResidual(inp, oup, s if i == 0 else 1, round(inp * t)))
            inp = oup
    last = int(MOBILENET_V2_LAST * width) if width > 1.0 else MOBILENET_V2_LAST
    layers.append(_conv_bn(inp, last, 1, 1, nn.ReLU6))
    return nn.Sequential(*layers)


def _separable_head(inp: int, out: int) -> nn.Sequential:
    """SSDLite's head: depthwise 3x3 (with bias), BN, ReLU6, then a 1x1 conv."""
    return nn.Sequential(nn.Conv2d(inp, inp, 3, 1, 1, groups=inp), nn.BatchNorm2d(inp),
                         nn.ReLU6(), nn.Conv2d(inp, out, 1))


def _conv_extra(inp: int, mid: int, out: int, kernel: int, stride: int, padding: int
                ) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, mid, 1), nn.ReLU(),
                         nn.Conv2d(mid, out, kernel, stride, padding), nn.ReLU())


class PytorchSSD(nn.Module):
    """One of pytorch-ssd's designs (see the module docstring), named by
    ``cfg.network``: images [B, 3, S, S] -> (loc [B, P, 4], conf [B, P, C])."""

    base_name = "base_net"

    def __init__(self, cfg: SSDConfig, validate: bool = True):
        super().__init__()
        if cfg.network not in SOURCE_INDEX:
            raise ValueError(f"{cfg.network} is not one of pytorch-ssd's designs")
        self.cfg = cfg
        self.validate = validate
        self.num_classes = cfg.num_classes
        self.network = cfg.network
        self.source_index = SOURCE_INDEX[cfg.network]
        if cfg.network == "vgg16-ssd":
            self.base_net = make_vgg(cfg.width, False)
        elif cfg.network == "mb1-ssd":
            self.base_net = mobilenet_v1(cfg.width)
        else:
            self.base_net = mobilenet_v2(cfg.width)
        channels = self._source_channels()
        self.source_layer_add_ons = nn.ModuleList(
            [nn.BatchNorm2d(channels[0])] if cfg.network == "vgg16-ssd" else [])
        extras = []
        inp = channels[1]
        for mid, out, kernel, stride, padding in cfg.extras:
            extras.append(InvertedResidual(inp, out, stride, mid) if cfg.network == "mb2-ssd-lite"
                          else _conv_extra(inp, mid, out, kernel, stride, padding))
            inp = out
        self.extras = nn.ModuleList(extras)
        channels += [e[1] for e in cfg.extras]
        A = cfg.boxes_per_location
        if cfg.network == "mb2-ssd-lite":
            def head(c, n, last):
                return nn.Conv2d(c, n, 1) if last else _separable_head(c, n)
        else:
            def head(c, n, last):
                return nn.Conv2d(c, n, 3, padding=1)
        last = len(channels) - 1
        self.regression_headers = nn.ModuleList(head(c, a * 4, i == last)
                                                for i, (c, a) in enumerate(zip(channels, A)))
        self.classification_headers = nn.ModuleList(
            head(c, a * cfg.num_classes, i == last) for i, (c, a) in enumerate(zip(channels, A)))
        self.reset_parameters()

    def _source_channels(self) -> list[int]:
        """Channels of the base network's two sources, read off the modules."""
        def out_channels(modules) -> int:
            convs = [m for m in modules.modules() if isinstance(m, nn.Conv2d)]
            return convs[-1].out_channels
        if self.network == "mb2-ssd-lite":
            first = out_channels(self.base_net[self.source_index].conv[:MB2_SOURCE_SUB])
        else:
            first = out_channels(self.base_net[: self.source_index])
        return [first, out_channels(self.base_net)]

    def reset_parameters(self) -> None:
        """Initialisation for training from scratch: a MobileNet's convolutions He-normal
        over their inputs (the variance a ReLU network keeps through its layers, also for
        depthwise convolutions, whose fan-out PyTorch counts over all channels), the
        extras' and heads' Xavier-uniform (pytorch-ssd's ``init``), biases 0, BatchNorm 1
        and 0. (pytorch-ssd's ``init`` makes every weight Xavier-uniform, and a MobileNet
        so initialised passes almost nothing through its layers: outputs near 1e-16.)"""
        # The VGG base as the seed's: Xavier-uniform throughout.
        backbone = set(self.base_net.modules()) if self.network != "vgg16-ssd" else set()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m in backbone:
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.validate and not checks.is_exporting():
            checks.check_images(images, self.cfg.input_size)
        x = images
        for layer in self.base_net[: self.source_index]:
            x = layer(x)
        if self.network == "mb2-ssd-lite":
            conv = self.base_net[self.source_index].conv
            x = conv[:MB2_SOURCE_SUB](x)
            sources = [x]
            x = conv[MB2_SOURCE_SUB:](x)        # as pytorch-ssd: the block's conv path alone
            rest = self.base_net[self.source_index + 1:]
        else:
            sources = [self.source_layer_add_ons[0](x) if self.source_layer_add_ons else x]
            rest = self.base_net[self.source_index:]
        for layer in rest:
            x = layer(x)
        sources.append(x)
        for layer in self.extras:
            x = layer(x)
            sources.append(x)
        loc = torch.cat([per_box(h(s), 4) for h, s in zip(self.regression_headers, sources)], 1)
        conf = torch.cat([per_box(h(s), self.num_classes)
                          for h, s in zip(self.classification_headers, sources)], 1)
        return loc, conf
