"""Matching of ground-truth boxes to default boxes, batched and export-friendly."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import checks
from .boxes import box_features, box_iou, cxcywh_to_xyxy, encode_features
from .errors import InputError, InputTypeError

# The seed counts a truth's own best default box as overlap 2, above any real IoU.
FORCED_OVERLAP = 2.0


def pad_targets(targets: Sequence[Tensor], validate: bool = True) -> Tensor:
    """The seed's list of per-image targets -> one padded Tensor[B, G, 5].

    targets: B tensors of shape [n_i, 5], rows (x1, y1, x2, y2, label); an image with no
    objects is a [0, 5] tensor. G = max n_i; padding rows are zeros with label -1.
    """
    if isinstance(targets, Tensor) or not isinstance(targets, Sequence):
        raise InputTypeError("targets: expected a list of [n_i, 5] tensors, "
                        f"got {type(targets).__name__}")
    if len(targets) == 0:
        raise InputError("targets: empty list; expected one [n_i, 5] tensor per image")
    for i, t in enumerate(targets):
        checks.require_float(t, f"targets[{i}]")
        if t.dim() != 2 or t.shape[1] != 5:
            raise InputError(f"targets[{i}]: expected shape [n, 5], got {list(t.shape)}")
    if validate:
        checks.require_same_device(**{f"targets[{i}]": t for i, t in enumerate(targets)})
    dtype = targets[0].dtype
    # Padded with -1 everywhere, then the coordinates of rows labelled -1 zeroed: no
    # lengths tensor, which would be copied from the host to the targets' device.
    padded = torch.nn.utils.rnn.pad_sequence([t.to(dtype) for t in targets],
                                             batch_first=True, padding_value=-1.0)  # [B, G, 5]
    is_padding = padded[..., 4:] == -1
    return torch.cat([padded[..., :4].masked_fill(is_padding, 0.0), padded[..., 4:]], -1)


def match(truths: Tensor, labels: Tensor, dbox: Tensor, threshold: float = 0.5,
          variances: tuple[float, float] = (0.1, 0.2), validate: bool = True
          ) -> tuple[Tensor, Tensor]:
    """Assign each default box a ground truth, as the seed's per-image ``match``.

    truths: Tensor[B, G, 4], (x1, y1, x2, y2) in [0, 1]; labels: Tensor[B, G], class
    0..C-2, -1 on padding rows (their coordinates are ignored); dbox: Tensor[P, 4] cxcywh.
    Returns loc_t: Tensor[B, P, 4] (encoded offsets) and conf_t: int64 Tensor[B, P]
    (0 background, label + 1 otherwise).

    Each default box takes the truth it overlaps most (the first on ties); each truth's
    best default box is forced to that truth with overlap 2, the later truth winning when
    two truths share one; default boxes below ``threshold`` are background.
    """
    if validate and not checks.is_exporting():
        checks.require_float(truths, "truths")
        checks.require_shape(truths, "truths", "[B, G, 4]", 3, d2=4)
        checks.require_shape(labels, "labels", "[B, G]", 2, d0=truths.shape[0],
                             d1=truths.shape[1])
        checks.check_dbox(dbox)
        checks.check_fraction(threshold, "threshold", low_open=True)
        checks.check_variances(variances)
        checks.require_same_device(truths=truths, labels=labels, dbox=dbox)
        checks.check_targets(torch.cat([truths, labels[..., None].to(truths.dtype)], -1),
                             name="truths/labels")
    B = truths.shape[0]
    P = dbox.shape[0]
    # One extra padding row per image, so that reductions over G never see an empty
    # axis (G = 0 is a valid batch) and an all-padding image has something to point to.
    truths = torch.cat([truths, truths.new_zeros(B, 1, 4)], 1)               # [B, G1, 4]
    labels = torch.cat([labels, labels.new_full((B, 1), -1)], 1)              # [B, G1]
    G1 = truths.shape[1]
    valid = labels >= 0                                                       # [B, G1]
    truths = torch.where(valid[..., None], truths, 0.0)

    overlaps = box_iou(truths, cxcywh_to_xyxy(dbox))                          # [B, G1, P]
    # Padding rows, zeroed above, overlap every default box by exactly 0; minus 1 they
    # can never win one. (In place: a where() over [B, G1, P] costs a new buffer.)
    overlaps -= (~valid)[..., None].to(overlaps.dtype)
    best_truth_overlap, best_truth_idx = overlaps.max(1)                      # [B, P]
    best_prior_idx = overlaps.argmax(2)                                       # [B, G1]

    # Force each truth's best prior to that truth; where several truths share a best
    # prior, the loop's last write (the highest truth index) wins, hence the amax.
    truth_ids = torch.arange(G1, device=dbox.device).expand(B, G1)
    forced_truth = torch.full((B, P), -1, dtype=torch.long, device=dbox.device).scatter_reduce(
        1, best_prior_idx, torch.where(valid, truth_ids, -1), reduce="amax")  # [B, P]
    forced = forced_truth >= 0
    best_truth_idx = torch.where(forced, forced_truth, best_truth_idx)
    best_truth_overlap = torch.where(forced, FORCED_OVERLAP, best_truth_overlap)

    # Encode each truth once, then take its row of features per default box: one index
    # per box into the batch's [B * G1, 4] table, an ONNX Gather (a gather along G1 needs
    # an index per coordinate, a [B, P, 4] int64 tensor that onnxruntime materialises).
    # The row offsets come from one Range of shape values, which onnxruntime's CUDA
    # provider takes on the host: no copy to the device.
    features = box_features(truths).flatten(0, 1)                            # [B * G1, 4]
    rows = best_truth_idx + torch.arange(0, B * G1, G1, device=dbox.device)[:, None]  # [B, P]
    matched = features.index_select(0, rows.flatten()).view(B, P, 4)          # [B, P, 4]
    conf_t = labels.gather(1, best_truth_idx).long() + 1                      # [B, P]
    conf_t = torch.where(best_truth_overlap < threshold, 0, conf_t)
    loc_t = encode_features(matched, dbox, variances)                         # [B, P, 4]
    return loc_t, conf_t
