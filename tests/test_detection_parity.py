"""Detections compared up to NMS ties: near-tied scores that pick other boxes pass, and
every planted error (a box moved, a box dropped, a box kept that NMS suppresses, a
wrong class, a box from outside the candidates) fails."""

import numpy as np
import pytest
import torch

from ssdonnx.deploy.detection_parity import (
    DETECTION_ATOL, Candidates, compare_detections, explain_by_ties)
from ssdonnx.postprocess import candidates, detect
from helpers import dbox

PRIORS = dbox("ssd-shapes")             # P = 760, a 96-pixel input
C = 4


def nearly_flat(seed: int, spread: float = 1e-5):
    """Network outputs whose class scores all lie within ``spread`` of each other, as a
    network with random weights gives them: NMS visits near-equal scores."""
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(1, PRIORS.shape[0], 4, generator=gen) * 0.1
    conf = torch.randn(1, PRIORS.shape[0], C, generator=gen) * spread
    return loc, conf


def head(loc, conf, **settings):
    settings = {"top_k": 50, "max_detections": 100, **settings}
    dets, num = detect(loc, conf, PRIORS, **settings)
    boxes, scores = candidates(loc, conf, PRIORS)
    cand = Candidates(boxes.numpy(), scores.numpy(), conf_thresh=settings.get(
        "conf_thresh", 0.01), top_k=settings["top_k"], nms_thresh=settings.get(
        "nms_thresh", 0.45), max_detections=settings["max_detections"])
    return dets.numpy(), num.numpy(), cand


def rows(dets, num):
    return dets[0, : int(num[0])].astype(np.float64)


@pytest.mark.parametrize("seed", range(4))
def test_noise_below_the_tolerance_picks_other_boxes_and_passes(seed):
    loc, conf = nearly_flat(seed)
    ref_dets, ref_num, cand = head(loc, conf)
    gen = torch.Generator().manual_seed(100 + seed)
    noisy = conf + torch.randn(conf.shape, generator=gen) * 1e-6   # scores move ~3e-7
    out_dets, out_num, _ = head(loc, noisy)
    strict = compare_detections(ref_dets, ref_num, out_dets, out_num)
    assert not strict.passed, "the noise changed nothing: the test would show nothing"
    tied = compare_detections(ref_dets, ref_num, out_dets, out_num, cand)
    assert tied.passed, tied.problems[:5]
    assert tied.tied_rows == strict.unexplained and tied.tied_images == (0,)


def test_the_reference_is_explained_by_its_own_candidates():
    for spread in (1e-3, 1.0, 5.0):
        loc, conf = nearly_flat(7, spread)
        dets, num, cand = head(loc, conf)
        assert explain_by_ties(rows(dets, num), cand, 0) == []


def suppressed(kept: np.ndarray, cand: Candidates) -> np.ndarray:
    """The best candidate row that NMS suppressed (in the top-k, above the threshold)."""
    boxes = cand.boxes[0].clip(0, 1)
    best = None
    for c in range(1, C):
        scores = cand.scores[0, c - 1]
        mine = kept[kept[:, 5] == c, :4]
        for p in np.argsort(-scores)[: cand.top_k]:
            taken = np.abs(mine - boxes[p]).max(1).min() < 1e-6
            if scores[p] > cand.conf_thresh and not taken and (
                    best is None or scores[p] > best[4]):
                best = np.concatenate([boxes[p], [scores[p], c]])
    assert best is not None, "NMS suppressed nothing: the case shows nothing"
    return best


def planted(kind: str, out: np.ndarray, cand: Candidates) -> np.ndarray:
    out = out.copy()
    if kind == "moved":
        out[3, 0] += 10 * DETECTION_ATOL
    elif kind == "rescored":
        out[3, 4] -= 10 * DETECTION_ATOL
    elif kind == "dropped":
        out = np.delete(out, 0, axis=0)
    elif kind == "class":
        out[2, 5] = out[2, 5] % (C - 1) + 1
    elif kind == "kept twice":
        out = np.concatenate([out[:1], out[:-1]])
    elif kind == "suppressed kept":
        # A top-k candidate above the threshold that is not among the rows: NMS took it
        # out for overlapping a kept box of its class.
        out = np.concatenate([out, suppressed(out, cand)[None]])
    return out


@pytest.mark.parametrize("kind", ["moved", "rescored", "dropped", "class", "kept twice",
                                  "suppressed kept"])
def test_planted_errors_fail_even_with_ties_allowed(kind):
    loc, conf = nearly_flat(3, spread=1.0)          # scores spread: NMS decides freely
    dets, num, cand = head(loc, conf, max_detections=200)
    good = rows(dets, num)
    assert len(good) < 200, "a full output would excuse a dropped row as the cut"
    bad = planted(kind, good, cand)
    assert explain_by_ties(bad, cand, 0), f"{kind}: not caught"
    out = np.zeros_like(dets)
    out[0, : len(bad)] = bad
    found = compare_detections(dets, num, out, np.array([len(bad)]), cand)
    assert not found.passed


def test_a_row_outside_the_top_k_fails():
    loc, conf = nearly_flat(5, spread=1.0)
    dets, num, cand = head(loc, conf, top_k=5)
    c = int(dets[0, 0, 5])
    order = np.argsort(-cand.scores[0, c - 1])
    outside = order[40]                  # far below the 5th score
    extra = np.concatenate([cand.boxes[0, outside].clip(0, 1),
                            [cand.scores[0, c - 1, outside], c]])
    assert explain_by_ties(np.concatenate([rows(dets, num), extra[None]]), cand, 0)


def test_a_full_output_excuses_what_ties_with_its_last_row():
    """With max_detections reached, which of the candidates tied with the last row are in
    is the runtime's choice; one clearly above it must be in."""
    loc, conf = nearly_flat(9)
    dets, num, cand = head(loc, conf, max_detections=20)
    assert int(num[0]) == 20
    kept = rows(dets, num)
    # A candidate that scores as the last row (within the tolerance), not among the rows.
    c = int(kept[-1, 5])
    scores, boxes = cand.scores[0, c - 1], cand.boxes[0].clip(0, 1)
    taken = np.abs(boxes[:, None] - kept[None, :, :4]).max(2).min(1) < 1e-6
    alike = np.flatnonzero((np.abs(scores - kept[-1, 4]) < DETECTION_ATOL / 10) & ~taken)
    other = np.concatenate([boxes[alike[0]], [scores[alike[0]], c]])[None]
    assert explain_by_ties(np.concatenate([kept[:-1], other]), cand, 0) == []


def test_a_full_output_must_hold_the_rows_clearly_above_its_last():
    loc, conf = nearly_flat(9, spread=1e-2)          # the 20 rows span ~2e-3
    dets, num, cand = head(loc, conf, max_detections=20)
    kept = rows(dets, num)
    assert kept[0, 4] - kept[-1, 4] > 10 * DETECTION_ATOL
    longer, n, _ = head(loc, conf, max_detections=21)
    next_in_line = rows(longer, n)[-1:]
    found = explain_by_ties(np.concatenate([kept[1:], next_in_line]), cand, 0)
    assert found, "the best row left out for the 21st was not caught"
