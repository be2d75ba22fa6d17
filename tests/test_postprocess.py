import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from ssdonnx.boxes import box_iou, xyxy_to_cxcywh
from ssdonnx.postprocess import ONNX_TRANSLATIONS, DetectionHead, detect, nms
from helpers import dbox
from ssdonnx.deploy.detection_parity import compare_detections
from ssdonnx.testing.reference import detect_reference, nm_suppression_reference

BOX_ATOL = 1e-5   # the issue's bar for boxes against the loop reference


def as_sets(dets, num):
    return [sorted(map(tuple, dets[b, : int(num[b])].tolist()), key=lambda r: (r[5], -r[4], r))
            for b in range(dets.shape[0])]


def assert_same_detections(ours, ref):
    dets, num = ours
    assert dets.shape[1] == 200 and dets.shape[2] == 6 and num.dtype == torch.int64
    for b, rows in enumerate(ref):
        assert int(num[b]) == len(rows), f"image {b}: {int(num[b])} vs {len(rows)}"
        got = dets[b, : len(rows)]
        # Sorted by score, then the empty rows.
        assert (got[1:, 4] <= got[:-1, 4]).all()
        assert (dets[b, len(rows):, 5] == -1).all() and (dets[b, len(rows):, :5] == 0).all()
        mine = sorted(got.tolist(), key=lambda r: (r[5], -r[4]))
        theirs = sorted(rows, key=lambda r: (r[5], -r[4]))
        np.testing.assert_allclose(np.array(mine), np.array(theirs), atol=BOX_ATOL, rtol=0)


def has_ties(conf, top_k=200):
    top = conf.softmax(-1)[..., 1:].transpose(1, 2).topk(top_k + 1, dim=2).values
    return bool((top[..., 1:] == top[..., :-1]).any())


def logits_for(scores: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is ``scores`` ([..., C], rows summing to 1)."""
    return scores.clamp(min=1e-12).log()


# Hand-made: four boxes of one class around the NMS threshold (0.45) and one far away.
# IoU(A, B) = 0.50 (suppressed), IoU(A, C) = 0.40 (kept), IoU(A, D) = 0.4545 (suppressed,
# just above the threshold), IoU(C, D) below the threshold.
A = [0.10, 0.10, 0.50, 0.50]
B_ = [0.10, 0.10, 0.50, 0.30]
C_ = [0.10, 0.10, 0.50, 0.26]
D = [0.10, 0.10, 0.2818, 0.50]
E = [0.70, 0.70, 0.90, 0.90]
CRAFTED = torch.tensor([A, B_, C_, D, E])


def crafted_inputs():
    priors = xyxy_to_cxcywh(CRAFTED)
    P = priors.shape[0]
    scores = torch.zeros(1, P, 4)
    # class 1: all five candidates, in order of score A > B > C > D > E
    scores[0, :, 1] = torch.tensor([0.60, 0.55, 0.50, 0.45, 0.40])
    # class 2: only box E is a candidate (the rest are below conf_thresh)
    scores[0, :, 2] = torch.tensor([0.001, 0.001, 0.001, 0.001, 0.30])
    # class 3: nothing above conf_thresh
    scores[0, :, 3] = 0.005
    scores[0, :, 0] = 1 - scores[0, :, 1:].sum(1)
    return torch.zeros(1, P, 4), logits_for(scores), priors


def test_crafted_iou_values_straddle_the_threshold():
    iou = box_iou(CRAFTED, CRAFTED)
    assert 0.49 < iou[0, 1] < 0.51 and 0.39 < iou[0, 2] < 0.41
    assert 0.45 < iou[0, 3] < 0.46 and iou[2, 3] < 0.45


def test_crafted_detections():
    loc, conf, priors = crafted_inputs()
    dets, num = detect(loc, conf, priors)
    kept = {(int(r[5]), round(float(r[4]), 3)) for r in dets[0, : int(num[0])]}
    # class 1 keeps A, C and E; class 2 keeps E; class 3 has no candidate.
    assert kept == {(1, 0.60), (1, 0.50), (1, 0.40), (2, 0.30)}
    assert_same_detections((dets, num), detect_reference(loc, conf, priors))


def test_more_candidates_than_top_k():
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(2, 8732, 4, generator=gen) * 0.3
    conf = torch.randn(2, 8732, 21, generator=gen) * 3
    for top_k in (5, 50):
        ours = detect(loc, conf, dbox(), top_k=top_k)
        assert_same_detections(ours, detect_reference(loc, conf, dbox(), top_k=top_k))


def test_max_detections_below_and_above_candidates():
    gen = torch.Generator().manual_seed(1)
    loc = torch.randn(1, 8732, 4, generator=gen) * 0.3
    conf = torch.randn(1, 8732, 3, generator=gen) * 3
    for K in (10, 500):     # 500 > (C-1) * top_k = 400: padded with empty rows
        dets, num = detect(loc, conf, dbox(), max_detections=K)
        assert dets.shape == (1, K, 6)
        ref = detect_reference(loc, conf, dbox(), max_detections=K)
        assert int(num[0]) == len(ref[0])


def test_no_candidates_at_all():
    loc = torch.zeros(2, 8732, 4)
    conf = torch.zeros(2, 8732, 21)
    conf[..., 0] = 20.0                     # every box confidently background
    dets, num = detect(loc, conf, dbox())
    assert (num == 0).all() and (dets[..., 5] == -1).all()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), B=st.integers(1, 3), C=st.sampled_from([2, 5, 21]),
       scale=st.sampled_from([0.5, 2.0, 5.0]))
def test_detect_equals_loop_reference(seed, B, C, scale):
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(B, 8732, 4, generator=gen) * 0.5
    conf = torch.randn(B, 8732, C, generator=gen) * scale
    # Equal scores (saturated softmax) make any order right, the seed's sort included.
    assume(not has_ties(conf))
    assert_same_detections(detect(loc, conf, dbox()), detect_reference(loc, conf, dbox()))


def test_nms_op_against_seed_nms():
    gen = torch.Generator().manual_seed(2)
    xy = torch.rand(30, 2, generator=gen) * 0.5
    boxes = torch.cat([xy, xy + 0.2 + torch.rand(30, 2, generator=gen) * 0.3], 1)
    scores = torch.rand(30, generator=gen)
    keep = nms(boxes[None], scores[None], 0.45, 0.0)[0]
    ids, count = nm_suppression_reference(boxes, scores, 0.45, 30)
    assert set(keep.nonzero()[:, 0].tolist()) == set(ids[:count].tolist())


@pytest.mark.parity
def test_exported_nms_matches_eager_on_crafted_boxes(tmp_path):
    """ONNX NonMaxSuppression has the seed's semantics: drop IoU > threshold, keep
    scores > conf_thresh; checked where the crafted IoUs straddle the threshold."""
    ort = pytest.importorskip("onnxruntime")
    loc, conf, priors = crafted_inputs()
    head = DetectionHead(priors).eval()
    program = torch.onnx.export(head, (loc.expand(2, -1, -1), conf.expand(2, -1, -1)),
                                dynamo=True, custom_translation_table=ONNX_TRANSLATIONS,
                                input_names=["loc", "conf"],
                                dynamic_shapes={"loc": {0: torch.export.Dim("B")},
                                                "conf": {0: torch.export.Dim("B")}})
    path = tmp_path / "head.onnx"
    program.save(str(path), external_data=False)
    ops = {n.op_type for n in program.model_proto.graph.node}
    assert "NonMaxSuppression" in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    loc3, conf3 = loc.expand(3, -1, -1).contiguous(), conf.expand(3, -1, -1).contiguous()
    out_dets, out_num = sess.run(None, {"loc": loc3.numpy(), "conf": conf3.numpy()})
    dets, num = detect(loc3, conf3, priors)
    assert out_num.tolist() == num.tolist() == [4, 4, 4]
    # Values from different kernels: matched within the parity tolerance, never with ==
    # (an AVX-512 onnxruntime gave 0.6000000834 where eager gave 0.6000000238).
    found = compare_detections(dets.numpy(), num.numpy(), out_dets, out_num)
    assert found.passed and found.rows == 12, found
