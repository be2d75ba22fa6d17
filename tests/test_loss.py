import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ssdonnx
from helpers import dbox, random_predictions, random_targets
from ssdonnx.testing.reference import GRAD_ATOL, SEED_ATOL, SEED_RTOL, multibox_loss_reference

RTOL = SEED_RTOL


def both_losses(targets, seed=0, C=21, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    loc, conf = random_predictions(gen, len(targets), 8732, C, scale)
    loc_a, conf_a = loc.clone().requires_grad_(), conf.clone().requires_grad_()
    loc_b, conf_b = loc.clone().requires_grad_(), conf.clone().requires_grad_()
    ours = ssdonnx.MultiBoxLoss()((loc_a, conf_a, dbox()), targets)
    ref = multibox_loss_reference(loc_b, conf_b, dbox(), targets)
    return ours, ref, (loc_a, conf_a), (loc_b, conf_b)


def assert_equal_to_seed(targets, seed=0, scale=1.0):
    ours, ref, (la, ca), (lb, cb) = both_losses(targets, seed, scale=scale)
    for o, r in zip(ours, ref):
        torch.testing.assert_close(o, r, rtol=RTOL, atol=SEED_ATOL)
    (ours[0] + ours[1]).backward()
    (ref[0] + ref[1]).backward()
    torch.testing.assert_close(la.grad, lb.grad, rtol=RTOL, atol=GRAD_ATOL)
    torch.testing.assert_close(ca.grad, cb.grad, rtol=RTOL, atol=GRAD_ATOL)
    return ours


def test_values_and_gradients_equal_seed():
    gen = torch.Generator().manual_seed(0)
    assert_equal_to_seed(random_targets(gen, [3, 1, 8, 0]))


def test_forty_objects():
    gen = torch.Generator().manual_seed(1)
    assert_equal_to_seed(random_targets(gen, [40, 40]))


def test_list_and_padded_targets_agree():
    gen = torch.Generator().manual_seed(2)
    targets = random_targets(gen, [2, 0, 5])
    loc, conf = random_predictions(gen, 3, 8732, 21)
    criterion = ssdonnx.MultiBoxLoss()
    a = criterion((loc, conf, dbox()), targets)
    b = criterion((loc, conf, dbox()), ssdonnx.pad_targets(targets))
    assert a[0] == b[0] and a[1] == b[1]


def test_zero_positives_give_zero_not_nan():
    targets = [torch.zeros(0, 5), torch.zeros(0, 5)]
    (ours_l, ours_c), (ref_l, ref_c), (la, ca), _ = both_losses(targets)
    # the seed divides 0 by 0
    assert math.isnan(ref_l.detach().item()) and math.isnan(ref_c.detach().item())
    assert ours_l.item() == 0.0 and ours_c.item() == 0.0
    (ours_l + ours_c).backward()
    assert (la.grad == 0).all() and (ca.grad == 0).all()


def test_all_padding_image_contributes_nothing():
    gen = torch.Generator().manual_seed(4)
    real = random_targets(gen, [3])
    loc, conf = random_predictions(gen, 2, 8732, 21)
    criterion = ssdonnx.MultiBoxLoss()
    one = criterion((loc[:1], conf[:1], dbox()), real)
    # A second image with only padding adds no positives and no mined negatives.
    two = criterion((loc, conf, dbox()), real + [torch.zeros(0, 5)])
    torch.testing.assert_close(one, two)


def test_device_argument_is_accepted_and_inputs_decide():
    gen = torch.Generator().manual_seed(5)
    targets = random_targets(gen, [2])
    loc, conf = random_predictions(gen, 1, 8732, 21)
    a = ssdonnx.MultiBoxLoss(0.5, 3, "cpu")((loc, conf, dbox()), targets)
    b = ssdonnx.MultiBoxLoss(device=torch.device("cuda"))((loc, conf, dbox()), targets)
    assert a == b


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_compute_in_float32(dtype):
    gen = torch.Generator().manual_seed(6)
    targets = random_targets(gen, [4, 2])
    loc, conf = random_predictions(gen, 2, 8732, 21)
    criterion = ssdonnx.MultiBoxLoss()
    full = criterion((loc, conf, dbox()), targets)
    half = criterion((loc.to(dtype), conf.to(dtype), dbox()), targets)
    assert all(h.dtype == torch.float32 for h in half)
    tol = 1e-2 if dtype == torch.float16 else 3e-2    # input rounding of fp16 / bf16
    for h, f in zip(half, full):
        torch.testing.assert_close(h, f, rtol=tol, atol=tol)


def test_tied_background_losses_mine_the_first_boxes_by_index():
    # All-zero logits (an untrained head with zero bias): every background loss is
    # log(C), so the seed's choice among them is up to its sort. The value cannot depend
    # on it; ssdonnx picks the first boxes by index, so its gradient is deterministic.
    gen = torch.Generator().manual_seed(8)
    targets = random_targets(gen, [2, 5])
    loc = torch.randn(2, 8732, 4, generator=gen)
    conf = torch.zeros(2, 8732, 21, requires_grad=True)
    ours = ssdonnx.MultiBoxLoss()((loc, conf, dbox()), targets)
    ref = multibox_loss_reference(loc, conf.detach(), dbox(), targets)
    torch.testing.assert_close(ours[1], ref[1], rtol=RTOL, atol=0)
    ours[1].backward()
    padded = ssdonnx.pad_targets(targets)
    _, conf_t = ssdonnx.match(padded[..., :4], padded[..., 4], dbox())
    pos = conf_t > 0
    background = (~pos).long().cumsum(1)
    expected_neg = ~pos & (background <= 3 * pos.sum(1, keepdim=True))
    assert ((conf.grad != 0).any(2) == (pos | expected_neg)).all()


def test_confident_network_stays_finite():
    # Large logits: the cross-entropy of well-classified boxes underflows to 0.
    gen = torch.Generator().manual_seed(7)
    assert_equal_to_seed(random_targets(gen, [2, 6]), scale=20.0)


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(0, 8), min_size=1, max_size=4), seed=st.integers(0, 2**31))
def test_loss_equals_loop_reference(counts, seed):
    gen = torch.Generator().manual_seed(seed)
    targets = random_targets(gen, counts)
    if sum(counts) == 0:
        ours = ssdonnx.MultiBoxLoss()((*random_predictions(gen, len(counts), 8732, 21), dbox()),
                                      targets)
        assert ours[0] == 0 and ours[1] == 0
    else:
        assert_equal_to_seed(targets, seed=seed % 1000)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_loss_on_cuda_equals_cpu_without_host_sync():
    gen = torch.Generator().manual_seed(9)
    targets = ssdonnx.pad_targets(random_targets(gen, [3, 0, 8]))
    loc, conf = random_predictions(gen, 3, 8732, 21)
    on_cpu = ssdonnx.MultiBoxLoss()((loc, conf, dbox()), targets)
    loc, conf, boxes, targets = (t.cuda() for t in (loc, conf, dbox(), targets))
    criterion = ssdonnx.MultiBoxLoss(validate=False)   # validation reads values back
    criterion((loc, conf, boxes), targets)              # warm-up: lazy CUDA init may sync
    torch.cuda.set_sync_debug_mode("error")             # any host sync raises
    try:
        on_cuda = criterion((loc, conf, boxes), targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for c, g in zip(on_cpu, on_cuda):
        torch.testing.assert_close(g.cpu(), c, rtol=RTOL, atol=SEED_ATOL)


def test_sub_micro_boxes_give_the_seeds_loss():
    # Sides below boxes.ENCODE_MIN_SIZE pass validation, so their loss is the seed's.
    thin = torch.tensor([[0.3, 0.3, 0.3 + 5e-7, 0.6, 4.0], [0.1, 0.1, 0.5, 0.5, 2.0]])
    assert_equal_to_seed([thin], seed=11)


def mining_like(gen, rows, n, kind):
    """Values >= 0 as mining losses are: continuous, many ties (0 for positives and very
    confident boxes, rounded ones), spread over many orders of magnitude, or -0.0."""
    if kind == "continuous":
        return torch.rand(rows, n, generator=gen) * 30
    if kind == "ties":
        return torch.randint(0, 4, (rows, n), generator=gen).float() * 0.5
    if kind == "wide":
        return (torch.randn(rows, n, generator=gen) * 15).exp()
    values = torch.zeros(rows, n)
    values[:, ::3] = torch.rand(rows, len(range(0, n, 3)), generator=gen)
    values[0] = -0.0
    return values


KINDS = ("continuous", "ties", "wide", "zeros")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("P", [1, 7, 300])
def test_kth_largest_is_the_kth_value_of_a_full_sort(P, kind):
    from ssdonnx.loss import kth_largest, kth_largest_by_bisection

    gen = torch.Generator().manual_seed(P)
    values = mining_like(gen, 5, P, kind)
    k = torch.tensor([[0], [1], [P // 2], [P], [P + 5]])       # k is taken in 1..P
    expected = values.sort(1, descending=True).values.gather(1, (k.clamp(1, P) - 1))
    torch.testing.assert_close(kth_largest(values, k), expected, rtol=0, atol=0)
    # The kernel of every device but the CPU, and of the exported graph:
    torch.testing.assert_close(kth_largest_by_bisection(values, k.clamp(1, P)), expected,
                               rtol=0, atol=0)


def test_kth_largest_exports_as_a_bisection_equal_to_the_eager_one(tmp_path):
    import onnx

    from ssdonnx.deploy.graphs import batch_dim, to_onnx
    from ssdonnx.deploy.runtime import Session
    from ssdonnx.loss import kth_largest

    class Kth(torch.nn.Module):
        def forward(self, values, k):
            return kth_largest(values, k)

    gen = torch.Generator().manual_seed(0)
    example = (torch.rand(3, 50, generator=gen), torch.tensor([[4], [0], [50]]))
    N = torch.export.Dim("N", min=2, max=10_000)
    proto = to_onnx(Kth(), dict(zip(("values", "k"), example)), ["kth"],
                    {"values": {0: batch_dim(), 1: N}, "k": {0: batch_dim()}})
    onnx.save(proto, tmp_path / "kth.onnx")
    ops = {n.op_type for n in proto.graph.node}
    assert "TopK" not in ops and "ReduceSum" in ops
    session = Session(tmp_path / "kth.onnx", "cpu")
    for trial in range(40):
        n = int(torch.randint(2, 400, (1,), generator=gen))
        values = mining_like(gen, 6, n, KINDS[trial % 4])
        k = torch.randint(0, n + 2, (6, 1), generator=gen)
        np.testing.assert_array_equal(session.run(values=values, k=k)["kth"],
                                      kth_largest(values, k).numpy(), err_msg=str(trial))


def test_box_cross_entropy_gradient_is_autograds():
    from ssdonnx.loss import BoxCrossEntropy

    gen = torch.Generator().manual_seed(12)
    conf = (torch.randn(3, 50, 7, generator=gen) * 4).requires_grad_()
    target = torch.randint(0, 7, (3, 50), generator=gen)
    weight = torch.rand(3, 50, generator=gen) * (torch.rand(3, 50, generator=gen) < 0.5)
    ours = BoxCrossEntropy.apply(conf, target)
    (ours * weight).sum().backward()
    grad, conf.grad = conf.grad, None
    ref = -torch.nn.functional.log_softmax(conf, 2).gather(2, target[..., None]).squeeze(2)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    (ref * weight).sum().backward()
    torch.testing.assert_close(grad, conf.grad, rtol=1e-6, atol=1e-7)
