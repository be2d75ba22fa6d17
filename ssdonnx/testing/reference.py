"""The seed's algorithms as loops: per image, per object, per class, exactly as the seed
notebook, the classic ``utils/match.py`` and the seed code base's ``DBox``, ``Detect``
and ``SSD`` do them (the seed's style kept on purpose).

The library proper never calls this module: the tests hold the vectorised code against
it, and the benchmarks (``ssdonnx.devtools.bench``) time it as the baseline.
"""

from itertools import product
from math import sqrt

import torch
import torch.nn.functional as F

# Tolerances of the vectorised code against these loops. Both are float32 PyTorch; they
# differ in the order of sums (per image and object here, batched there), which moves
# values by a few ulps: relative 1e-5 for values and gradients (the seed's bar), and an
# absolute floor for terms that cancel to near 0.
SEED_RTOL = 1e-5
SEED_ATOL = 1e-6
GRAD_ATOL = 1e-7

def dbox_reference(cfg):
    """The seed's DBox.make_dbox_list, loop for loop."""
    mean = []
    for k, f in enumerate(cfg.feature_maps):
        for i, j in product(range(f), repeat=2):
            f_k = cfg.input_size / cfg.steps[k]
            cx = (j + 0.5) / f_k
            cy = (i + 0.5) / f_k
            s_k = cfg.min_sizes[k] / cfg.input_size
            mean += [cx, cy, s_k, s_k]
            s_k_prime = sqrt(s_k * (cfg.max_sizes[k] / cfg.input_size))
            mean += [cx, cy, s_k_prime, s_k_prime]
            for ar in cfg.aspect_ratios[k]:
                mean += [cx, cy, s_k * sqrt(ar), s_k / sqrt(ar)]
                mean += [cx, cy, s_k / sqrt(ar), s_k * sqrt(ar)]
    output = torch.Tensor(mean).view(-1, 4)
    output.clamp_(max=1, min=0)
    return output


def point_form(boxes):
    return torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1)


def intersect(box_a, box_b):
    A, B = box_a.size(0), box_b.size(0)
    max_xy = torch.min(box_a[:, 2:].unsqueeze(1).expand(A, B, 2),
                       box_b[:, 2:].unsqueeze(0).expand(A, B, 2))
    min_xy = torch.max(box_a[:, :2].unsqueeze(1).expand(A, B, 2),
                       box_b[:, :2].unsqueeze(0).expand(A, B, 2))
    inter = torch.clamp((max_xy - min_xy), min=0)
    return inter[:, :, 0] * inter[:, :, 1]


def jaccard(box_a, box_b):
    inter = intersect(box_a, box_b)
    area_a = ((box_a[:, 2] - box_a[:, 0]) * (box_a[:, 3] - box_a[:, 1])).unsqueeze(1).expand_as(inter)
    area_b = ((box_b[:, 2] - box_b[:, 0]) * (box_b[:, 3] - box_b[:, 1])).unsqueeze(0).expand_as(inter)
    union = area_a + area_b - inter
    return inter / union


def encode(matched, priors, variances):
    g_cxcy = (matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]
    g_cxcy /= (variances[0] * priors[:, 2:])
    g_wh = (matched[:, 2:] - matched[:, :2]) / priors[:, 2:]
    g_wh = torch.log(g_wh) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def decode(loc, priors, variances):
    boxes = torch.cat((
        priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
        priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def match_reference(threshold, truths, priors, variances, labels, loc_t, conf_t, idx):
    """The classic per-image match, writing into loc_t[idx] and conf_t[idx]."""
    overlaps = jaccard(truths, point_form(priors))
    best_prior_overlap, best_prior_idx = overlaps.max(1, keepdim=True)
    best_truth_overlap, best_truth_idx = overlaps.max(0, keepdim=True)
    best_truth_idx.squeeze_(0)
    best_truth_overlap.squeeze_(0)
    best_prior_idx.squeeze_(1)
    best_prior_overlap.squeeze_(1)
    best_truth_overlap.index_fill_(0, best_prior_idx, 2)
    for j in range(best_prior_idx.size(0)):
        best_truth_idx[best_prior_idx[j]] = j
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx] + 1
    conf[best_truth_overlap < threshold] = 0
    loc = encode(matches, priors, variances)
    loc_t[idx] = loc
    conf_t[idx] = conf


def match_batch_reference(targets, dbox, threshold=0.5, variances=(0.1, 0.2)):
    """Loop over images as the seed's MultiBoxLoss does; images with no object are all
    background (the classic match cannot take an empty image: it would fail on max)."""
    B, P = len(targets), dbox.shape[0]
    device = dbox.device   # the seed's self.device
    loc_t = torch.zeros(B, P, 4, device=device)
    conf_t = torch.zeros(B, P, dtype=torch.long, device=device)
    for idx in range(B):
        if targets[idx].shape[0] == 0:
            continue
        truths = targets[idx][:, :-1].to(device)
        labels = targets[idx][:, -1].to(device)
        match_reference(threshold, truths, dbox, list(variances), labels, loc_t, conf_t, idx)
    return loc_t, conf_t


def multibox_loss_reference(loc_data, conf_data, dbox_list, targets, jaccard_thresh=0.5,
                            negpos_ratio=3):
    """The seed notebook's MultiBoxLoss.forward, statement for statement."""
    num_batch = loc_data.size(0)
    num_dbox = loc_data.size(1)
    num_classes = conf_data.size(2)
    loc_t, conf_t_label = match_batch_reference(targets, dbox_list.to(loc_data.device),
                                                jaccard_thresh)

    pos_mask = conf_t_label > 0
    pos_idx = pos_mask.unsqueeze(pos_mask.dim()).expand_as(loc_data)
    loc_p = loc_data[pos_idx].view(-1, 4)
    loc_t = loc_t[pos_idx].view(-1, 4)
    loss_l = F.smooth_l1_loss(loc_p, loc_t, reduction='sum')

    batch_conf = conf_data.view(-1, num_classes)
    loss_c = F.cross_entropy(batch_conf, conf_t_label.view(-1), reduction='none')
    num_pos = pos_mask.long().sum(1, keepdim=True)
    loss_c = loss_c.view(num_batch, -1)
    loss_c[pos_mask] = 0
    _, loss_idx = loss_c.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    num_neg = torch.clamp(num_pos * negpos_ratio, max=num_dbox)
    neg_mask = idx_rank < (num_neg).expand_as(idx_rank)
    pos_idx_mask = pos_mask.unsqueeze(2).expand_as(conf_data)
    neg_idx_mask = neg_mask.unsqueeze(2).expand_as(conf_data)
    conf_hnm = conf_data[(pos_idx_mask + neg_idx_mask).gt(0)].view(-1, num_classes)
    conf_t_label_hnm = conf_t_label[(pos_mask + neg_mask).gt(0)]
    loss_c = F.cross_entropy(conf_hnm, conf_t_label_hnm, reduction='sum')
    N = num_pos.sum()
    loss_l /= N
    loss_c /= N
    return loss_l, loss_c


def nm_suppression_reference(boxes, scores, overlap=0.45, top_k=200):
    """The seed code base's greedy NMS over the top_k highest scores."""
    count = 0
    keep = scores.new(scores.size(0)).zero_().long()
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = torch.mul(x2 - x1, y2 - y1)
    v, idx = scores.sort(0)
    idx = idx[-top_k:]
    while idx.numel() > 0:
        i = idx[-1]
        keep[count] = i
        count += 1
        if idx.size(0) == 1:
            break
        idx = idx[:-1]
        xx1 = torch.clamp(torch.index_select(x1, 0, idx), min=x1[i])
        yy1 = torch.clamp(torch.index_select(y1, 0, idx), min=y1[i])
        xx2 = torch.clamp(torch.index_select(x2, 0, idx), max=x2[i])
        yy2 = torch.clamp(torch.index_select(y2, 0, idx), max=y2[i])
        w = torch.clamp(xx2 - xx1, min=0.0)
        h = torch.clamp(yy2 - yy1, min=0.0)
        inter = w * h
        rem_areas = torch.index_select(area, 0, idx)
        union = (rem_areas - inter) + area[i]
        IoU = inter / union
        idx = idx[IoU.le(overlap)]
    return keep, count


def detect_reference(loc_data, conf_data, dbox_list, conf_thresh=0.01, top_k=200,
                     nms_thresh=0.45, max_detections=200, variances=(0.1, 0.2)):
    """The seed's Detect, per image and per class; then the K best across classes.

    Returns, per image, a list of (x1, y1, x2, y2, score, class) tuples sorted by score,
    boxes clipped to [0, 1] as ssdonnx's output is.
    """
    conf_data = F.softmax(conf_data, dim=-1)
    num_batch, _, num_classes = conf_data.shape
    conf_preds = conf_data.transpose(2, 1)
    results = []
    for i in range(num_batch):
        decoded_boxes = decode(loc_data[i], dbox_list, list(variances))
        conf_scores = conf_preds[i].clone()
        rows = []
        for cl in range(1, num_classes):
            c_mask = conf_scores[cl].gt(conf_thresh)
            scores = conf_scores[cl][c_mask]
            if scores.nelement() == 0:
                continue
            l_mask = c_mask.unsqueeze(1).expand_as(decoded_boxes)
            boxes = decoded_boxes[l_mask].view(-1, 4)
            ids, count = nm_suppression_reference(boxes, scores, nms_thresh, top_k)
            for k in ids[:count].tolist():
                b = boxes[k].clamp(0, 1).tolist()
                rows.append((*b, float(scores[k]), cl))
        rows.sort(key=lambda r: -r[4])
        results.append(rows[:max_detections])
    return results


# --- The seed code base's SSD300 network (pytorch_advanced ssd_model.py, train phase) ---

import torch.nn as nn  # noqa: E402
import torch.nn.init as init  # noqa: E402


def make_vgg():
    layers = []
    in_channels = 3
    cfg = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'MC', 512, 512, 512, 'M', 512, 512, 512]
    for v in cfg:
        if v == 'M':
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        elif v == 'MC':
            layers += [nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)]
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = v
    pool5 = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
    conv6 = nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6)
    conv7 = nn.Conv2d(1024, 1024, kernel_size=1)
    layers += [pool5, conv6, nn.ReLU(inplace=True), conv7, nn.ReLU(inplace=True)]
    return nn.ModuleList(layers)


def make_extras():
    layers = []
    in_channels = 1024
    cfg = [256, 512, 128, 256, 128, 256, 128, 256]
    layers += [nn.Conv2d(in_channels, cfg[0], kernel_size=(1))]
    layers += [nn.Conv2d(cfg[0], cfg[1], kernel_size=(3), stride=2, padding=1)]
    layers += [nn.Conv2d(cfg[1], cfg[2], kernel_size=(1))]
    layers += [nn.Conv2d(cfg[2], cfg[3], kernel_size=(3), stride=2, padding=1)]
    layers += [nn.Conv2d(cfg[3], cfg[4], kernel_size=(1))]
    layers += [nn.Conv2d(cfg[4], cfg[5], kernel_size=(3))]
    layers += [nn.Conv2d(cfg[5], cfg[6], kernel_size=(1))]
    layers += [nn.Conv2d(cfg[6], cfg[7], kernel_size=(3))]
    return nn.ModuleList(layers)


def make_loc_conf(num_classes=21, bbox_aspect_num=[4, 6, 6, 6, 4, 4]):
    loc_layers, conf_layers = [], []
    for ch, n in zip([512, 1024, 512, 256, 256, 256], bbox_aspect_num):
        loc_layers += [nn.Conv2d(ch, n * 4, kernel_size=3, padding=1)]
        conf_layers += [nn.Conv2d(ch, n * num_classes, kernel_size=3, padding=1)]
    return nn.ModuleList(loc_layers), nn.ModuleList(conf_layers)


class SeedL2Norm(nn.Module):
    def __init__(self, input_channels=512, scale=20):
        super().__init__()
        self.weight = nn.Parameter(torch.Tensor(input_channels))
        self.scale = scale
        init.constant_(self.weight, self.scale)
        self.eps = 1e-10

    def forward(self, x):
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        x = torch.div(x, norm)
        weights = self.weight.unsqueeze(0).unsqueeze(2).unsqueeze(3).expand_as(x)
        return weights * x


class SeedSSD(nn.Module):
    def __init__(self, num_classes=21):
        super().__init__()
        self.num_classes = num_classes
        self.vgg = make_vgg()
        self.extras = make_extras()
        self.L2Norm = SeedL2Norm()
        self.loc, self.conf = make_loc_conf(num_classes)

    def forward(self, x):
        sources, loc, conf = [], [], []
        for k in range(23):
            x = self.vgg[k](x)
        sources.append(self.L2Norm(x))
        for k in range(23, len(self.vgg)):
            x = self.vgg[k](x)
        sources.append(x)
        for k, v in enumerate(self.extras):
            x = F.relu(v(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        for (x, l, c) in zip(sources, self.loc, self.conf):
            loc.append(l(x).permute(0, 2, 3, 1).contiguous())
            conf.append(c(x).permute(0, 2, 3, 1).contiguous())
        loc = torch.cat([o.view(o.size(0), -1) for o in loc], 1)
        conf = torch.cat([o.view(o.size(0), -1) for o in conf], 1)
        return loc.view(loc.size(0), -1, 4), conf.view(conf.size(0), -1, self.num_classes)
