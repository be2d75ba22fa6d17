"""A description of qfgaohao/pytorch-ssd, the oracle for ssdonnx.mobilenet: its networks
built the way its code builds them (a backbone as a plain list of layers, source layer
indexes with an optional add-on or a path into a layer, a generic SSD that walks that
list), its prior generation, its per-image matching (``assign_priors``, IoU with an
epsilon) and its ``MultiboxLoss`` (hard negatives ranked on the background loss).

Written here from its semantics, not imported: pytorch-ssd is not a dependency. The tests
build these networks, save their state_dicts, load them strictly into ssdonnx's presets
and compare the outputs; they hold ssdonnx's loss against ``multibox_loss`` below on the
targets ``match_prior`` gives.
"""

import itertools
import math
from collections import namedtuple

import torch
import torch.nn.functional as F
from torch import nn

# (layer index, name of a sub-module, how many of its layers) for a source taken inside
# a layer; pytorch-ssd's GraphPath.
Path = namedtuple("Path", "index name count")


def conv_bn(inp, oup, stride, relu):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                         relu(inplace=True))


def conv_dw(inp, oup, stride):
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def mobilenet_v1_layers():
    plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
            (256, 512, 2)] + [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    return nn.Sequential(conv_bn(3, 32, 2, nn.ReLU), *[conv_dw(*p) for p in plan])


class Block(nn.Module):
    """MobileNetV2's inverted residual, expansion ratio given."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


def mobilenet_v2_layers(width_mult=1.0):
    settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                [6, 160, 3, 2], [6, 320, 1, 1]]
    inp = int(32 * width_mult)
    last = int(1280 * width_mult) if width_mult > 1.0 else 1280
    layers = [conv_bn(3, inp, 2, nn.ReLU6)]
    for t, c, n, s in settings:
        oup = int(c * width_mult)
        for i in range(n):
            layers.append(Block(inp, oup, s if i == 0 else 1, t))
            inp = oup
    layers.append(nn.Sequential(nn.Conv2d(inp, last, 1, 1, 0, bias=False),
                                nn.BatchNorm2d(last), nn.ReLU6(inplace=True)))
    return nn.Sequential(*layers)


def vgg_layers():
    layers, inp = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif v == "C":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(inp, v, 3, padding=1), nn.ReLU(inplace=True)]
            inp = v
    layers += [nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
               nn.ReLU(inplace=True), nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)]
    return layers


def separable(inp, out):
    return nn.Sequential(nn.Conv2d(inp, inp, 3, groups=inp, stride=1, padding=1),
                         nn.BatchNorm2d(inp), nn.ReLU6(), nn.Conv2d(inp, out, 1))


def plain_extras(specs):
    return nn.ModuleList([nn.Sequential(nn.Conv2d(i, m, 1), nn.ReLU(), nn.Conv2d(m, o, 3, s, p),
                                        nn.ReLU()) for i, m, o, s, p in specs])


class GenericSSD(nn.Module):
    """pytorch-ssd's SSD: walks the backbone's list, takes the sources, runs the extras,
    applies each source's heads; training mode returns (confidences, locations)."""

    def __init__(self, num_classes, base_net, sources, extras, classification, regression):
        super().__init__()
        self.num_classes = num_classes
        self.base_net = base_net
        self.source_layer_indexes = sources
        self.extras = extras
        self.classification_headers = classification
        self.regression_headers = regression
        self.source_layer_add_ons = nn.ModuleList(
            [s[1] for s in sources if isinstance(s, tuple) and not isinstance(s, Path)])

    def forward(self, x):
        confidences, locations = [], []
        start = 0
        for k, source in enumerate(self.source_layer_indexes):
            path, add_on = None, None
            if isinstance(source, Path):
                path, end = source, source.index
            elif isinstance(source, tuple):
                end, add_on = source
            else:
                end = source
            for layer in self.base_net[start:end]:
                x = layer(x)
            y = add_on(x) if add_on is not None else x
            if path is not None:
                sub = getattr(self.base_net[end], path.name)
                for layer in sub[:path.count]:
                    x = layer(x)
                y = x
                for layer in sub[path.count:]:
                    x = layer(x)
                end += 1
            start = end
            self._heads(k, y, confidences, locations)
        for layer in self.base_net[end:]:
            x = layer(x)
        for k, layer in enumerate(self.extras, start=len(self.source_layer_indexes)):
            x = layer(x)
            self._heads(k, x, confidences, locations)
        return torch.cat(confidences, 1), torch.cat(locations, 1)

    def _heads(self, k, x, confidences, locations):
        c = self.classification_headers[k](x).permute(0, 2, 3, 1).contiguous()
        confidences.append(c.view(c.size(0), -1, self.num_classes))
        r = self.regression_headers[k](x).permute(0, 2, 3, 1).contiguous()
        locations.append(r.view(r.size(0), -1, 4))


def create(net, num_classes):
    """pytorch-ssd's ``create_<net>`` for ``vgg16-ssd``, ``mb1-ssd``, ``mb2-ssd-lite``."""
    if net == "mb1-ssd":
        chans = [512, 1024, 512, 256, 256, 256]
        return GenericSSD(
            num_classes, mobilenet_v1_layers(), [12, 14],
            plain_extras([(1024, 256, 512, 2, 1), (512, 128, 256, 2, 1), (256, 128, 256, 2, 1),
                          (256, 128, 256, 2, 1)]),
            nn.ModuleList(nn.Conv2d(c, 6 * num_classes, 3, padding=1) for c in chans),
            nn.ModuleList(nn.Conv2d(c, 6 * 4, 3, padding=1) for c in chans))
    if net == "mb2-ssd-lite":
        chans = [576, 1280, 512, 256, 256]

        def heads(n):
            return nn.ModuleList([separable(c, 6 * n) for c in chans]
                                 + [nn.Conv2d(64, 6 * n, kernel_size=1)])
        extras = nn.ModuleList([Block(1280, 512, 2, 0.2), Block(512, 256, 2, 0.25),
                                Block(256, 256, 2, 0.5), Block(256, 64, 2, 0.25)])
        return GenericSSD(num_classes, mobilenet_v2_layers(), [Path(14, "conv", 3), 19],
                          extras, heads(num_classes), heads(4))
    if net == "vgg16-ssd":
        base = nn.ModuleList(vgg_layers())
        chans, boxes = [512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4]
        return GenericSSD(
            num_classes, base, [(23, nn.BatchNorm2d(512)), len(base)],
            plain_extras([(1024, 256, 512, 2, 1), (512, 128, 256, 2, 1), (256, 128, 256, 1, 0),
                          (256, 128, 256, 1, 0)]),
            nn.ModuleList(nn.Conv2d(c, b * num_classes, 3, padding=1)
                          for c, b in zip(chans, boxes)),
            nn.ModuleList(nn.Conv2d(c, b * 4, 3, padding=1) for c, b in zip(chans, boxes)))
    raise ValueError(net)


# (feature map size, shrinkage, min size, max size, aspect ratios) per source map, and
# the pixel mean and std, of pytorch-ssd's configs.
MOBILENET_SPECS = [(19, 16, 60, 105, [2, 3]), (10, 32, 105, 150, [2, 3]),
                   (5, 64, 150, 195, [2, 3]), (3, 100, 195, 240, [2, 3]),
                   (2, 150, 240, 285, [2, 3]), (1, 300, 285, 330, [2, 3])]
VGG_SPECS = [(38, 8, 30, 60, [2]), (19, 16, 60, 111, [2, 3]), (10, 32, 111, 162, [2, 3]),
             (5, 64, 162, 213, [2, 3]), (3, 100, 213, 264, [2]), (1, 300, 264, 315, [2])]
MOBILENET_MEAN, MOBILENET_STD = 127.0, 128.0
VGG_MEAN = (123.0, 117.0, 104.0)


def generate_priors(specs, image_size=300):
    priors = []
    for size, shrinkage, smin, smax, ratios in specs:
        scale = image_size / shrinkage
        for j, i in itertools.product(range(size), repeat=2):
            cx, cy = (i + 0.5) / scale, (j + 0.5) / scale
            w = h = smin / image_size
            priors.append([cx, cy, w, h])
            big = math.sqrt(smax * smin) / image_size
            priors.append([cx, cy, big, big])
            for r in ratios:
                r = math.sqrt(r)
                priors.append([cx, cy, w * r, h / r])
                priors.append([cx, cy, w / r, h * r])
    return torch.tensor(priors).clamp(0.0, 1.0)


def iou_of(a, b, eps=1e-5):
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    overlap = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return overlap / (area_a + area_b - overlap + eps)


def match_prior(gt_boxes, gt_labels, priors, iou_threshold=0.5, variances=(0.1, 0.2)):
    """One image: gt_boxes [n, 4] corner form, gt_labels [n] 1-based -> (locations
    [P, 4], labels [P]), as pytorch-ssd's MatchPrior with assign_priors."""
    corners = torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)
    ious = iou_of(gt_boxes.unsqueeze(0), corners.unsqueeze(1))               # [P, n]
    best_target, best_target_index = ious.max(1)
    _, best_prior_index = ious.max(0)
    for target, prior in enumerate(best_prior_index):
        best_target_index[prior] = target
    best_target.index_fill_(0, best_prior_index, 2)
    labels = gt_labels[best_target_index]
    labels[best_target < iou_threshold] = 0
    boxes = gt_boxes[best_target_index]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    locations = torch.cat([(centre - priors[:, :2]) / priors[:, 2:] / variances[0],
                           torch.log(size / priors[:, 2:]) / variances[1]], 1)
    return locations, labels


def multibox_loss(confidence, predicted_locations, labels, gt_locations, neg_pos_ratio=3):
    """pytorch-ssd's MultiboxLoss on matched targets: (regression, classification)."""
    num_classes = confidence.size(2)
    with torch.no_grad():
        loss = -F.log_softmax(confidence, dim=2)[:, :, 0]
        pos_mask = labels > 0
        num_neg = pos_mask.long().sum(dim=1, keepdim=True) * neg_pos_ratio
        loss[pos_mask] = -math.inf
        _, indexes = loss.sort(dim=1, descending=True)
        _, orders = indexes.sort(dim=1)
        mask = pos_mask | (orders < num_neg)
    classification = F.cross_entropy(confidence[mask, :].reshape(-1, num_classes), labels[mask],
                                     reduction="sum")
    regression = F.smooth_l1_loss(predicted_locations[pos_mask, :].reshape(-1, 4),
                                  gt_locations[pos_mask, :].reshape(-1, 4), reduction="sum")
    num_pos = gt_locations[pos_mask, :].reshape(-1, 4).size(0)
    return regression / num_pos, classification / num_pos
