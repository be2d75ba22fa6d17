import pytest
import torch
from hypothesis import given, settings, strategies as st

import ssdonnx
from ssdonnx.boxes import box_iou, cxcywh_to_xyxy
from helpers import dbox, random_targets
from ssdonnx.testing.reference import SEED_ATOL, SEED_RTOL, match_batch_reference

VAR = (0.1, 0.2)


def match_padded(targets, threshold=0.5):
    padded = ssdonnx.pad_targets(targets)
    return ssdonnx.match(padded[..., :4], padded[..., 4], dbox(), threshold, VAR)


def assert_same_as_reference(targets, threshold=0.5):
    loc_t, conf_t = match_padded(targets, threshold)
    ref_loc, ref_conf = match_batch_reference(targets, dbox(), threshold, VAR)
    assert conf_t.dtype == torch.int64 and conf_t.shape == ref_conf.shape
    assert torch.equal(conf_t, ref_conf)
    # loc_t is only read on positives; those must agree with the loop exactly.
    pos = ref_conf > 0
    torch.testing.assert_close(loc_t[pos], ref_loc[pos], rtol=SEED_RTOL, atol=10 * SEED_ATOL)
    assert torch.isfinite(loc_t).all()
    return loc_t, conf_t


def test_two_truths_sharing_one_best_default_box_later_wins():
    a = [0.40, 0.40, 0.60, 0.60]
    b = [0.401, 0.401, 0.601, 0.601]   # same best default box as a
    targets = [torch.tensor([a + [4.0], b + [9.0]])]
    priors = cxcywh_to_xyxy(dbox())
    best = box_iou(torch.tensor([a, b]), priors).argmax(1)
    assert best[0] == best[1]
    _, conf_t = assert_same_as_reference(targets)
    assert conf_t[0, best[0]] == 10      # label 9 + 1: the later truth wins


def test_truth_below_threshold_is_still_matched():
    tiny = [0.500, 0.500, 0.505, 0.506]
    priors = cxcywh_to_xyxy(dbox())
    ious = box_iou(torch.tensor([tiny]), priors)[0]
    assert ious.max() < 0.5
    _, conf_t = assert_same_as_reference([torch.tensor([tiny + [7.0]])])
    assert conf_t[0, ious.argmax()] == 8
    assert (conf_t > 0).sum() == 1


def test_one_object_and_forty_objects():
    gen = torch.Generator().manual_seed(10)
    assert_same_as_reference(random_targets(gen, [1]))
    assert_same_as_reference(random_targets(gen, [40, 3]))


def test_images_without_objects_are_background():
    gen = torch.Generator().manual_seed(11)
    targets = random_targets(gen, [0, 2, 0])
    loc_t, conf_t = assert_same_as_reference(targets)
    assert (conf_t[0] == 0).all() and (conf_t[2] == 0).all()
    # A batch with no object at all (G = 0).
    loc_t, conf_t = match_padded([torch.zeros(0, 5), torch.zeros(0, 5)])
    assert conf_t.shape == (2, 8732) and (conf_t == 0).all() and torch.isfinite(loc_t).all()


def test_padding_rows_never_match_even_where_they_would_overlap():
    real = torch.tensor([[0.1, 0.1, 0.3, 0.3, 2.0]])
    padded = ssdonnx.pad_targets([real, torch.zeros(0, 5)])
    # A padding row whose coordinates would overlap many priors must still be ignored.
    padded = torch.cat([padded, torch.tensor([[[0.0, 0.0, 1.0, 1.0, -1.0]]] * 2)], 1)
    loc_t, conf_t = ssdonnx.match(padded[..., :4], padded[..., 4], dbox())
    ref_loc, ref_conf = match_batch_reference([real, torch.zeros(0, 5)], dbox())
    assert torch.equal(conf_t, ref_conf)


def test_pad_targets():
    t = [torch.tensor([[0.1, 0.1, 0.2, 0.2, 3.0]]), torch.zeros(0, 5),
         torch.tensor([[0.1, 0.1, 0.2, 0.2, 1.0], [0.3, 0.3, 0.5, 0.5, 0.0]])]
    p = ssdonnx.pad_targets(t)
    assert p.shape == (3, 2, 5)
    assert torch.equal(p[0, 0], t[0][0]) and torch.equal(p[2], t[2])
    assert p[0, 1, 4] == -1 and (p[1, :, 4] == -1).all() and (p[1, :, :4] == 0).all()
    assert ssdonnx.pad_targets([torch.zeros(0, 5)]).shape == (1, 0, 5)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_thresholds(threshold):
    gen = torch.Generator().manual_seed(12)
    assert_same_as_reference(random_targets(gen, [5, 8]), threshold)


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(0, 8), min_size=1, max_size=4), seed=st.integers(0, 2**31))
def test_match_equals_loop_reference(counts, seed):
    gen = torch.Generator().manual_seed(seed)
    assert_same_as_reference(random_targets(gen, counts))
