"""MultiBoxLoss: Smooth-L1 location loss and hard-negative-mined cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import checks
from .errors import InputError
from .matching import match, pad_targets


# Bisection steps of the exact k-th largest: the order-preserving integer keys of floats
# >= 0 (their IEEE bit patterns) lie in [0, 2^31).
KEY_BITS = 31
# Keys below this (subnormal floats) count as 0; every normal float is at least 2^-126.
NORMAL_KEY = 1 << 23
SMALLEST_NORMAL = 2.0 ** -126


def _threshold(key: Tensor) -> Tensor:
    """The float whose bit pattern is ``key`` (int64 >= 0), the smallest normal float
    for a subnormal key: a value is >= it exactly when its key is >= ``key``."""
    normal = key.clamp(NORMAL_KEY, 0x7F7FFFFF).to(torch.int32).view(torch.float32)
    return torch.where(key < NORMAL_KEY, SMALLEST_NORMAL, normal)


def kth_largest_by_bisection(values: Tensor, k: Tensor) -> Tensor:
    """The k-th largest of each row of ``values`` >= 0, found with no sort and no size
    read from the data: a bisection over the values' IEEE bit patterns (which order
    non-negative floats as their values), ``KEY_BITS`` fixed steps, each a compare and
    count over [B, N] against the float whose pattern is the step's midpoint. values
    [B, N], k int64 [B, 1] in 1..N -> [B, 1]. Exact, ties included (-0.0 and subnormal
    values count as 0, which no cross-entropy is)."""
    lo = torch.zeros_like(k)                      # count(values >= key lo) >= k always
    hi = torch.full_like(k, 1 << KEY_BITS)        # count(values >= key hi) < k always
    for _ in range(KEY_BITS):
        mid = (lo + hi) // 2
        enough = (values >= _threshold(mid)).sum(1, keepdim=True) >= k
        lo = torch.where(enough, mid, lo)
        hi = torch.where(enough, hi, mid)
    return torch.where(lo == 0, 0.0, _threshold(lo))     # the k-th largest value


def kth_largest_kernel(values: Tensor, k: Tensor) -> Tensor:
    """The k-th largest value of each row: values [B, N] >= 0 (mining losses), k int64
    [B, 1] -> [B, 1]. The eager kernel of the custom operator ``kth_largest`` below
    (which callers use).

    k is taken in 1..N (k = 0 gives the largest). On the CPU a partial selection of the
    batch's largest k (read on the host) does far less work than anything else; on other
    devices ``kth_largest_by_bisection``, which reads nothing back (a wait for the GPU).
    In ONNX the same bisection (``kth_largest_onnx``).
    """
    if values.shape[0] == 0:      # no rows: nothing to select (and k.max() has no value)
        return values.new_empty((0, 1))
    k = k.clamp(1, values.shape[1])
    if values.device.type == "cpu":
        ranked = values.topk(int(k.max()), dim=1).values                       # [B, K]
        return ranked.gather(1, k - 1)
    return kth_largest_by_bisection(values.float(), k).to(values.dtype)


kth_largest = torch.library.custom_op("ssdonnx::kth_largest", kth_largest_kernel,
                                      mutates_args=())


@kth_largest.register_fake
def _kth_largest_fake(values, k):
    return values.new_empty((values.shape[0], 1))


# 2^e for e = -126 .. 127, exact in float32: the exponents of normal floats.
_POWERS_OF_TWO = [2.0 ** e for e in range(-126, 128)]


def kth_largest_onnx(values, k):
    """ONNX translation of ``ssdonnx::kth_largest``: ``kth_largest_by_bisection``. ONNX
    has no bit cast, so each step's threshold, the float whose bit pattern is the
    midpoint key [B, 1], is built from the key's exponent (a table of powers of two) and
    mantissa, exactly. No TopK: a TopK of all N was the loss graph's slowest node, and
    one whose K came from the data would be read on the host by onnxruntime's CUDA
    provider on every run."""
    from onnx import TensorProto
    from onnxscript import opset18 as op   # only when exporting: it costs seconds

    FLOAT = TensorProto.FLOAT
    n = op.Shape(values, start=1, end=2)                                       # [1]
    k = op.Min(op.Max(k, op.Constant(value_int=1)), n)                         # [B, 1]
    wanted = op.Cast(k, to=FLOAT)                # counts up to N < 2^24 are exact floats
    powers = op.Constant(value_floats=_POWERS_OF_TWO)                          # [254]
    step = op.Constant(value_int=NORMAL_KEY)
    one = op.Constant(value_float=1.0)

    def threshold(key):                                                        # [B, 1]
        exponent = op.Clip(op.Div(key, step), op.Constant(value_int=1),
                           op.Constant(value_int=254))                         # biased
        fraction = op.Div(op.Cast(op.Mod(key, step), to=FLOAT),
                          op.Constant(value_float=float(NORMAL_KEY)))           # [0, 1)
        power = op.Gather(powers, op.Sub(exponent, op.Constant(value_int=1)))
        normal = op.Mul(power, op.Add(one, fraction))                          # exact
        return op.Where(op.Less(key, step), op.Constant(value_float=SMALLEST_NORMAL),
                        normal)

    lo = op.Mul(k, op.Constant(value_int=0))                                   # [B, 1]
    hi = op.Add(lo, op.Constant(value_int=1 << KEY_BITS))
    axes = op.Constant(value_ints=[1])
    for _ in range(KEY_BITS):
        mid = op.Div(op.Add(lo, hi), op.Constant(value_int=2))
        above = op.Cast(op.GreaterOrEqual(values, threshold(mid)), to=FLOAT)   # [B, N]
        enough = op.GreaterOrEqual(op.ReduceSum(above, axes, keepdims=1), wanted)
        lo = op.Where(enough, mid, lo)
        hi = op.Where(enough, hi, mid)
    return op.Where(op.Equal(lo, op.Constant(value_int=0)), op.Constant(value_float=0.0),
                    threshold(lo))                                             # [B, 1]


ONNX_TRANSLATIONS = {torch.ops.ssdonnx.kth_largest.default: kth_largest_onnx}


# Negatives mined per positive at most: far beyond any use (the seed's 3), and small
# enough that num_pos * neg_pos never wraps int64.
MAX_NEG_POS = 10_000


class BoxCrossEntropy(torch.autograd.Function):
    """Per-box cross-entropy: conf [B, P, C] logits, target int64 [B, P] -> [B, P],
    -log_softmax(conf)[target], as ``-F.log_softmax(conf, 2).gather(...)`` computes it
    (which exports to plain ONNX ops, unlike SoftmaxCrossEntropyLoss).

    The backward writes softmax(conf) * g - onehot(target) * g in one pass over
    B x P x C; autograd's own would fill a zero gradient of that size, scatter into it,
    then run the log-softmax backward over it.
    """

    @staticmethod
    def forward(ctx, conf: Tensor, target: Tensor) -> Tensor:
        log_p = F.log_softmax(conf, dim=2)                                      # [B, P, C]
        ctx.save_for_backward(log_p, target)
        return -log_p.gather(2, target[..., None]).squeeze(2)                  # [B, P]

    @staticmethod
    def backward(ctx, grad: Tensor):
        log_p, target = ctx.saved_tensors
        g = grad[..., None]                                                    # [B, P, 1]
        grad_conf = log_p.exp().mul_(g)
        return grad_conf.scatter_add_(2, target[..., None], -g), None


class MultiBoxLoss(nn.Module):
    """SSD's loss, a drop-in for the seed's ``MultiBoxLoss``, batched and exportable.

    ``loss_l, loss_c = criterion((loc, conf, dbox), targets)`` with
    loc: Tensor[B, P, 4] offsets, conf: Tensor[B, P, C] raw logits, dbox: Tensor[P, 4]
    cxcywh, and targets either the seed's list of B tensors [n_i, 5] or one padded
    Tensor[B, G, 5] (label -1 on padding rows). Both losses are summed over the batch
    and divided by N, the number of positive default boxes in the batch.

    Differences from the seed, all where the seed's result is undefined: with N = 0 both
    losses are 0 (the seed divides by zero into NaN); float16/bfloat16 inputs are
    computed in float32 and the losses are float32; among background boxes with equal
    mining losses, the lower indices are mined first (the seed leaves it to its sort).

    ``normalize="global"`` divides by N summed over all processes of the default
    ``torch.distributed`` group, so that DistributedDataParallel's gradient averaging
    gives the gradient of single-process training on the whole batch.
    """

    def __init__(self, jaccard_thresh: float = 0.5, neg_pos: int = 3, device=None,
                 variances: tuple[float, float] = (0.1, 0.2), num_classes: int | None = None,
                 validate: bool = True, normalize: str = "batch"):
        super().__init__()
        if normalize not in ("batch", "global"):
            raise InputError(f"normalize: expected 'batch' or 'global', got {normalize!r}")
        self.jaccard_thresh = checks.check_fraction(jaccard_thresh, "jaccard_thresh",
                                                    low_open=True)
        self.negpos_ratio = checks.check_count(neg_pos, "neg_pos", 0, MAX_NEG_POS)
        self.device = device  # accepted for compatibility; computation follows the inputs
        self.variances = checks.check_variances(variances)
        self.num_classes = None if num_classes is None else \
            checks.check_count(num_classes, "num_classes", 2)
        self.validate = validate
        self.normalize = normalize

    def forward(self, predictions: tuple[Tensor, Tensor, Tensor],
                targets: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        loc, conf, dbox = predictions
        validate = self.validate and not checks.is_exporting()
        if not isinstance(targets, Tensor):
            targets = pad_targets(targets, validate=validate)
        if validate:
            checks.check_predictions(loc, conf, dbox)
            checks.require_tensor(targets, "targets")
            checks.require_same_device(loc=loc, targets=targets)
            checks.check_targets(targets, conf.shape[2])
            if targets.shape[0] != loc.shape[0]:
                raise InputError(f"targets: {targets.shape[0]} images, loc and conf have "
                                 f"{loc.shape[0]}")
            if self.num_classes is not None and conf.shape[2] != self.num_classes:
                raise InputError(f"conf: expected {self.num_classes} classes, got "
                                 f"{conf.shape[2]}")
        loc, conf = loc.float(), conf.float()
        targets = targets.to(dtype=loc.dtype, device=loc.device)
        return multibox_loss(loc, conf, dbox.float(), targets, self.jaccard_thresh,
                             self.negpos_ratio, self.variances, self.normalize)


def multibox_loss(loc: Tensor, conf: Tensor, dbox: Tensor, targets: Tensor,
                  jaccard_thresh: float = 0.5, neg_pos: int = 3,
                  variances: tuple[float, float] = (0.1, 0.2), normalize: str = "batch"
                  ) -> tuple[Tensor, Tensor]:
    """The loss on validated float tensors; see ``MultiBoxLoss``. Fixed shapes throughout."""
    C = conf.shape[2]
    # Inside an exported graph nothing can be rejected: a label outside 0..C-2 makes its
    # row padding (README, "Input contract"); validated eager inputs never have one.
    labels = targets[..., 4]
    labels = torch.where((labels >= 0) & (labels < C - 1), labels, -1.0)
    loc_t, conf_t = match(targets[..., :4], labels, dbox, jaccard_thresh, variances,
                          validate=False)
    return matched_loss(loc, conf, loc_t, conf_t, neg_pos, normalize)


def matched_loss(loc: Tensor, conf: Tensor, loc_t: Tensor, conf_t: Tensor, neg_pos: int = 3,
                 normalize: str = "batch") -> tuple[Tensor, Tensor]:
    """The loss on matched targets: loc [B, P, 4], conf [B, P, C] logits, loc_t [B, P, 4]
    encoded offsets, conf_t int64 [B, P] (0 background), as ``match`` gives them (and as
    pytorch-ssd's MatchPrior does per image). Smooth L1 over positives, cross-entropy over
    positives and each image's ``neg_pos`` x positives hardest negatives, both over N."""
    P = loc.shape[1]
    pos = conf_t > 0                                                          # [B, P]
    num_pos = pos.sum(1)                                                      # [B]

    # Location loss over positives only. A select, not a multiply: offsets of
    # background boxes are never read, so nothing there can leak inf or NaN.
    smooth_l1 = F.smooth_l1_loss(loc, loc_t, reduction="none").sum(2)         # [B, P]
    loss_l = torch.where(pos, smooth_l1, 0.0).sum()

    # Per-box cross-entropy, exported as LogSoftmax + GatherElements (no
    # SoftmaxCrossEntropyLoss, which onnxruntime cannot run on CUDA).
    ce = BoxCrossEntropy.apply(conf, conf_t)                                  # [B, P]

    # Hard negative mining: keep each image's neg_pos * num_pos highest background losses
    # (positives count as 0, as in the seed). Boxes above the k-th highest loss are
    # negatives, and of those equal to it the first by index fill the places left.
    # Masks throughout, no gather of a data-dependent size.
    mining = torch.where(pos, 0.0, ce.detach())
    num_neg = (num_pos * neg_pos).clamp(max=P)[:, None]                       # [B, 1]
    kth = kth_largest(mining, num_neg)                                        # [B, 1]
    above = mining > kth
    tied = mining == kth
    places = num_neg - above.sum(1, keepdim=True)                             # [B, 1]
    neg = above | (tied & (tied.cumsum(1) <= places))
    loss_c = torch.where(pos | neg, ce, 0.0).sum()

    # N = 0 means no positives and no mined negatives: both sums are 0, and so the losses.
    n = num_pos.sum().to(loc.dtype)
    world = 1
    if normalize == "global" and torch.distributed.is_available() \
            and torch.distributed.is_initialized():
        # DDP averages gradients over W processes: dividing by N_total / W makes that
        # average the gradient of sum / N_total over the whole global batch.
        n = n.detach().clone()
        torch.distributed.all_reduce(n)
        world = torch.distributed.get_world_size()
    n = n.clamp(min=1.0) / world
    return loss_l / n, loss_c / n
