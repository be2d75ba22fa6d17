"""Bad input gets a clear error naming the argument, image and row; valid input stays
finite, in eager PyTorch and in the exported loss graph (property tests)."""

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import ssdonnx
from ssdonnx.checks import COORD_TOLERANCE
from ssdonnx.deploy.graphs import LossGraph
from ssdonnx.postprocess import detect
from helpers import dbox, random_predictions, random_targets
from ssdonnx.deploy.parity import LOSS_ATOL, LOSS_RTOL
from ssdonnx.testing.reference import SEED_ATOL, SEED_RTOL, multibox_loss_reference

# A few hundred examples in CI; tools/fuzz.py raises this for long runs.
EXAMPLES = int(os.environ.get("SSDONNX_FUZZ_EXAMPLES", "60"))

# (corruption name, how to corrupt row (b, g) of padded targets, expected message part)
CORRUPTIONS = {
    "nan": (lambda t, b, g: t[b, g].__setitem__(1, float("nan")), "non-finite value"),
    "inf": (lambda t, b, g: t[b, g].__setitem__(2, float("inf")), "non-finite value"),
    "x2<=x1": (lambda t, b, g: t[b, g].__setitem__(2, t[b, g, 0]), "x2 <= x1"),
    "y2<y1": (lambda t, b, g: t[b, g].__setitem__(3, t[b, g, 1] - 0.01), "y2 <= y1"),
    "outside": (lambda t, b, g: t[b, g].__setitem__(2, 1 + 3 * COORD_TOLERANCE),
                "coordinate outside [0, 1]"),
    "fractional label": (lambda t, b, g: t[b, g].__setitem__(4, 2.5), "not a whole number"),
    "label < -1": (lambda t, b, g: t[b, g].__setitem__(4, -2.0), "label below -1"),
    "label >= C-1": (lambda t, b, g: t[b, g].__setitem__(4, 20.0), "label >= 20"),
}


def call_loss(loc, conf, targets, **kw):
    return ssdonnx.MultiBoxLoss(**kw)((loc, conf, dbox()), targets)


@settings(max_examples=EXAMPLES, deadline=None)
@given(seed=st.integers(0, 2**31), kind=st.sampled_from(sorted(CORRUPTIONS)),
       counts=st.lists(st.integers(1, 6), min_size=1, max_size=3), data=st.data())
def test_corrupt_rows_are_named(seed, kind, counts, data):
    gen = torch.Generator().manual_seed(seed)
    targets = ssdonnx.pad_targets(random_targets(gen, counts))
    b = data.draw(st.integers(0, len(counts) - 1))
    g = data.draw(st.integers(0, counts[b] - 1))
    corrupt, message = CORRUPTIONS[kind]
    corrupt(targets, b, g)
    loc, conf = random_predictions(gen, len(counts), 8732, 21)
    with pytest.raises(ValueError, match=rf"targets: image {b}, row {g}: .*"):
        call_loss(loc, conf, targets)
    try:
        call_loss(loc, conf, targets)
    except ValueError as exc:
        assert message in str(exc)
    # The list form names the same image and row.
    as_list = [targets[i, : counts[i]] for i in range(len(counts))]
    with pytest.raises(ValueError, match=rf"image {b}, row {g}: "):
        call_loss(loc, conf, as_list)


def test_padding_followed_by_real_rows_is_fine():
    t = torch.tensor([[[0, 0, 0, 0, -1.0], [0.1, 0.1, 0.3, 0.3, 4.0]]])
    loss = call_loss(*random_predictions(torch.Generator().manual_seed(0), 1, 8732, 21), t)
    assert all(torch.isfinite(x) for x in loss)


def test_coordinates_within_tolerance_are_accepted_as_given():
    t = torch.tensor([[[-COORD_TOLERANCE / 2, 0.1, 1 + COORD_TOLERANCE / 2, 0.4, 1.0]]])
    call_loss(*random_predictions(torch.Generator().manual_seed(0), 1, 8732, 21), t)


@pytest.mark.parametrize("make,exc,message", [
    (lambda loc, c, t: (loc[0], c, t), ValueError, r"loc: expected shape \[B, P, 4\]"),
    (lambda loc, c, t: (loc[..., :3], c, t), ValueError, r"loc: expected shape \[B, P, 4\]"),
    (lambda loc, c, t: (loc, c[:1], t), ValueError, r"conf: expected shape \[B, P, C\]"),
    (lambda loc, c, t: (loc[:, :100], c[:, :100], t), ValueError, "size 8732 at dim 1"),
    (lambda loc, c, t: (loc, c, t[:1]), ValueError, "targets: 1 images, loc and conf have 2"),
    (lambda loc, c, t: (loc, c, t[..., :4]), ValueError, r"targets: expected shape \[B, G, 5\]"),
    (lambda loc, c, t: (loc.long(), c, t), TypeError, "loc: expected a floating-point tensor"),
    (lambda loc, c, t: (loc, c > 0, t), TypeError, "conf: expected a floating-point tensor"),
    (lambda loc, c, t: (loc, c, t.long()), TypeError, "targets: expected a floating-point"),
    (lambda loc, c, t: (loc, c, t.numpy()), TypeError, "targets: expected a list"),
    (lambda loc, c, t: (loc, c, [t[0], t[1, :, :3]]), ValueError, r"targets\[1\]: expected shape"),
    (lambda loc, c, t: (loc, c, []), ValueError, "targets: empty list"),
    (lambda loc, c, t: (loc.index_put((torch.tensor([1]), torch.tensor([7])),
                                    torch.tensor(float("nan"))), c, t),
     ValueError, r"loc: non-finite values \(NaN or inf\) at index \[1, 7, "),
    (lambda loc, c, t: (loc, c.index_put((torch.tensor([0]),), torch.tensor(float("inf"))), t),
     ValueError, "conf: non-finite logits"),
])
def test_wrong_shapes_dtypes_and_values(make, exc, message):
    gen = torch.Generator().manual_seed(1)
    loc, conf = random_predictions(gen, 2, 8732, 21)
    targets = ssdonnx.pad_targets(random_targets(gen, [2, 1]))
    with pytest.raises(exc, match=message):
        call_loss(*make(loc, conf, targets))


def test_wrong_class_count_and_devices():
    gen = torch.Generator().manual_seed(2)
    loc, conf = random_predictions(gen, 1, 8732, 21)
    t = ssdonnx.pad_targets(random_targets(gen, [1]))
    with pytest.raises(ValueError, match="conf: expected 81 classes, got 21"):
        call_loss(loc, conf, t, num_classes=81)
    with pytest.raises(ValueError, match="tensors on different devices: loc on cpu, "
                                         "targets on meta"):
        call_loss(loc, conf, t.to("meta"))


def test_match_and_detect_validate_too():
    with pytest.raises(ValueError, match=r"truths/labels: image 0, row 1: y2 <= y1"):
        ssdonnx.match(torch.tensor([[[0.1, 0.1, 0.2, 0.2], [0.1, 0.5, 0.2, 0.4]]]),
                      torch.tensor([[1.0, 2.0]]), dbox())
    with pytest.raises(ValueError, match=r"labels: expected shape \[B, G\]"):
        ssdonnx.match(torch.zeros(1, 2, 4), torch.zeros(1, 3), dbox())
    with pytest.raises(ValueError, match="conf: non-finite logits"):
        detect(torch.zeros(1, 8732, 4), torch.full((1, 8732, 21), float("nan")), dbox())
    with pytest.raises(ValueError, match=r"dbox: expected shape \[P, 4\]"):
        detect(torch.zeros(1, 8732, 4), torch.zeros(1, 8732, 21), dbox()[:, :2])


def test_validate_false_skips_checks_and_is_cheap():
    gen = torch.Generator().manual_seed(3)
    loc, conf = random_predictions(gen, 8, 8732, 21)
    t = ssdonnx.pad_targets(random_targets(gen, [4] * 8))
    bad = t.clone()
    bad[0, 0, 4] = 99.0
    call_loss(loc, conf, bad, validate=False)       # no exception: the caller vouches


# --- Valid input stays finite and equal to the loop reference -------------------------

def extreme_targets(gen, counts):
    """Valid rows including zero-area-like slivers, full-image boxes and duplicates."""
    out = []
    for t in random_targets(gen, counts):
        if len(t):
            t[0, :4] = torch.tensor([0.0, 0.0, 1.0, 1.0])                    # whole image
        if len(t) > 1:
            t[1, :4] = torch.tensor([0.5, 0.5, 0.5 + 1e-6, 0.5 + 1e-6])      # a sliver
        if len(t) > 2:
            t[2] = t[-1]                                                     # duplicate
        out.append(t)
    return out


@pytest.mark.parity
@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(seed=st.integers(0, 2**31),
       counts=st.lists(st.integers(0, 12), min_size=1, max_size=4),
       scale=st.sampled_from([0.1, 1.0, 30.0]))
def test_valid_batches_are_finite_and_equal_reference_in_graph_and_eager(exported, seed,
                                                                         counts, scale):

    gen = torch.Generator().manual_seed(seed)
    targets = extreme_targets(gen, counts)
    loc, conf = random_predictions(gen, len(counts), 8732, 21, scale)
    eager = call_loss(loc, conf, targets)
    assert all(torch.isfinite(x) for x in eager)
    sess = _loss_session(exported["loss"])
    out = sess.run(loc=loc, conf=conf, targets=ssdonnx.pad_targets(targets))
    np.testing.assert_allclose(out["loss_l"], eager[0].numpy(), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    np.testing.assert_allclose(out["loss_c"], eager[1].numpy(), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    if sum(counts):
        ref = multibox_loss_reference(loc, conf, dbox(), targets)
        torch.testing.assert_close(eager[0], ref[0], rtol=SEED_RTOL, atol=SEED_ATOL)
        torch.testing.assert_close(eager[1], ref[1], rtol=SEED_RTOL, atol=SEED_ATOL)
    else:
        assert eager[0] == 0 and eager[1] == 0


_SESSIONS = {}


def _loss_session(path):
    from ssdonnx.deploy.runtime import Session
    if path not in _SESSIONS:
        _SESSIONS[path] = Session(path, "cpu")
    return _SESSIONS[path]


@pytest.mark.parity
@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(seed=st.integers(0, 2**31), counts=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       kind=st.sampled_from(["degenerate", "label >= C-1", "label < -1", "outside"]))
def test_exported_graph_keeps_unrejectable_rows_finite(exported, seed, counts, kind):
    """Rows the graph cannot reject: degenerate boxes are encoded with the minimum size,
    labels outside 0..C-2 make their row padding; the losses stay finite."""
    gen = torch.Generator().manual_seed(seed)
    targets = ssdonnx.pad_targets(random_targets(gen, counts))
    if kind == "degenerate":
        targets[0, 0, 2] = targets[0, 0, 0]
    elif kind == "label >= C-1":
        targets[0, 0, 4] = 25.0
    elif kind == "label < -1":
        targets[0, 0, 4] = -7.0
    else:
        targets[0, 0, 2] = 3.0
    loc, conf = random_predictions(gen, len(counts), 8732, 21)
    out = _loss_session(exported["loss"]).run(loc=loc, conf=conf, targets=targets)
    assert np.isfinite(out["loss_l"]) and np.isfinite(out["loss_c"])
    eager = LossGraph(ssdonnx.get_config("ssd300-voc"))
    eager.criterion.validate = False
    ref = eager(loc, conf, targets)
    np.testing.assert_allclose(out["loss_l"], ref[0].numpy(), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    np.testing.assert_allclose(out["loss_c"], ref[1].numpy(), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    if kind.startswith("label"):
        # the row counts as padding: same losses as without it
        dropped = targets.clone()
        dropped[0, 0, 4] = -1
        alt = eager(loc, conf, dropped)
        torch.testing.assert_close(ref, alt)
