"""Detections of two runtimes compared: as sets, and, where they differ, up to NMS ties.

Greedy NMS is discontinuous. Where candidates of one class score within float noise of
each other (a network whose scores are nearly flat, a flat picture on which every
default box of one shape sees the same features), which of them the runtime visits
first is decided by rounding, and what that one suppresses, and so what is kept after
it, follows. Two correct runtimes can then keep different, equally right, sets of boxes,
and a comparison of the sets says they disagree (issue #31: a pytorch-ssd MobileNet
with BatchNorm statistics as training leaves them, whose class scores all lie within
0.01 of 1/21, kept different boxes in 57 of 200 rows while no value differed by more
than 1.2e-7).

``explain_by_ties`` decides such a case without choosing a tolerance for the sets:
the runtime's detections must be *a* greedy NMS of the reference's candidates for some
order of the scores within ``DETECTION_ATOL``. That is: every row is a candidate of the
reference (box and score within the tolerance, in its class's top-k, above the score
threshold); no two kept boxes of a class overlap by more than the NMS threshold; and
every candidate that is not kept is suppressed by a kept box of its class that does not
score below it by more than the tolerance, or fell below the image's cut (the output is
full and it scores no more than the last row). A runtime that drops, adds, moves or
mis-scores a box fails it; one that breaks ties otherwise passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Detections: normalised box coordinates and softmax scores after the network.
DETECTION_ATOL = 1e-4
# IoUs of boxes whose corners are within DETECTION_ATOL: moving one corner of a box with
# sides of 0.1 by 1e-4 changes its IoU with a box it half overlaps by about 1e-3.
NMS_IOU_ATOL = 1e-3


@dataclass(frozen=True)
class Candidates:
    """What a detection head chooses from, per image: ``boxes`` [B, P, 4] decoded (x1,
    y1, x2, y2, not clipped, as NMS sees them), ``scores`` [B, C-1, P] softmax of the
    foreground classes, and the head's settings (``conf_thresh``, ``top_k``,
    ``nms_thresh``, ``max_detections``)."""
    boxes: np.ndarray
    scores: np.ndarray
    conf_thresh: float
    top_k: int
    nms_thresh: float
    max_detections: int


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a [n, 4] with b [m, 4] -> [n, m]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def explain_by_ties(rows: np.ndarray, cand: Candidates, image: int,
                    atol: float = DETECTION_ATOL, iou_atol: float = NMS_IOU_ATOL
                    ) -> list[str]:
    """What in one image's detections ``rows`` [n, 6] (x1, y1, x2, y2, score, class) no
    greedy NMS of ``cand``'s candidates for image ``image`` can give, with scores tied
    within ``atol`` and IoUs within ``iou_atol`` of the threshold (module docstring).
    Empty when the rows are such an NMS."""
    boxes = cand.boxes[image].astype(np.float64)                        # [P, 4]
    scores = cand.scores[image].astype(np.float64)                      # [C-1, P]
    C1, P = scores.shape
    k = min(cand.top_k, P)
    kth = np.sort(scores, axis=1)[:, P - k]                             # [C-1]
    clipped = boxes.clip(0, 1)
    problems: list[str] = []
    kept: dict[int, list[int]] = {}
    for row in rows.astype(np.float64):
        c = int(row[5]) if np.isfinite(row[5]) else -1
        if not (1 <= c <= C1 and c == row[5]):
            problems.append(f"a row of class {row[5]:g}, not one of 1..{C1}")
            continue
        s = scores[c - 1]
        err = np.maximum(np.abs(clipped - row[:4]).max(1), np.abs(s - row[4]))  # [P]
        err[kept.get(c, [])] = np.inf
        p = int(err.argmin())
        if not err[p] <= atol:
            problems.append(f"class {c}, score {row[4]:.6g}: no candidate within {atol:g} "
                            f"(nearest differs by {err[p]:.3g})")
        elif s[p] < kth[c - 1] - atol or s[p] <= cand.conf_thresh - atol:
            problems.append(f"class {c}, score {row[4]:.6g}: below the score threshold or "
                            f"outside the top {k}")
        else:
            kept.setdefault(c, []).append(p)
    full = len(rows) >= cand.max_detections
    cut = float(rows[:, 4].min()) if full and len(rows) else -np.inf
    for c in range(1, C1 + 1):
        s, mine = scores[c - 1], np.array(kept.get(c, []), dtype=np.int64)
        if len(mine) > 1:
            overlap = np.triu(_iou(boxes[mine], boxes[mine]) > cand.nms_thresh + iou_atol, 1)
            problems += [f"class {c}: two kept boxes overlap by more than {cand.nms_thresh}"
                         for _ in range(int(overlap.sum()))]
        # Candidates beyond doubt: above the threshold and in the top k by more than atol.
        sure = (s > cand.conf_thresh + atol) & (s > kth[c - 1] + atol)
        sure[mine] = False
        missing = np.flatnonzero(sure)
        if not len(missing):
            continue
        explained = s[missing] <= cut + atol
        if len(mine):
            suppressed = (_iou(boxes[missing], boxes[mine]) > cand.nms_thresh - iou_atol) & \
                (s[mine][None] >= s[missing][:, None] - atol)
            explained |= suppressed.any(1)
        problems += [f"class {c}, score {s[q]:.6g}: a candidate neither kept nor suppressed"
                     for q in missing[~explained]]
    return problems


@dataclass(frozen=True)
class DetectionComparison:
    """Two runtimes' detections on one batch: ``rows`` compared, ``max_abs`` the largest
    difference between partner rows (same class, box and score within the tolerance),
    ``problems`` what is wrong (without candidates: each image's rows without a partner;
    with them: what NMS ties cannot explain), ``unexplained`` how many rows or problems
    that is, ``tied_rows`` and ``tied_images`` the rows without a partner in images that
    differ only as NMS ties allow."""
    rows: int
    max_abs: float
    problems: tuple[str, ...] = ()
    unexplained: int = 0
    tied_rows: int = 0
    tied_images: tuple[int, ...] = ()

    @property
    def passed(self) -> bool:
        return self.unexplained == 0


def _matched(a: np.ndarray, o: np.ndarray, atol: float) -> tuple[int, float]:
    """Rows of ``a`` and ``o`` ([n, 6], [m, 6]) without a partner (same class, box and
    score within ``atol``; each row partners once), and the largest partner difference."""
    unused = list(range(len(o)))
    differing, max_abs = 0, 0.0
    for row in a:
        best, best_err = None, np.inf
        for j in unused:
            if o[j, 5] != row[5]:
                continue
            err = np.abs(o[j, :5] - row[:5]).max()
            if err < best_err:
                best, best_err = j, err
        if best is not None and best_err <= atol:
            unused.remove(best)
            max_abs = max(max_abs, float(best_err))
        else:
            differing += 1
    return differing + len(unused), max_abs


def compare_detections(ref_dets, ref_num, out_dets, out_num, candidates: Candidates | None
                       = None, atol: float = DETECTION_ATOL) -> DetectionComparison:
    """``out``'s detections [B, K, 6] and counts [B] against the reference's, per image as
    sets (rows are matched, not compared by position); where an image's sets differ and
    the reference's ``candidates`` are given, whether NMS ties explain it
    (``explain_by_ties``)."""
    ref_dets, out_dets = np.asarray(ref_dets, np.float64), np.asarray(out_dets, np.float64)
    ref_num, out_num = np.asarray(ref_num), np.asarray(out_num)
    if ref_dets.shape != out_dets.shape or ref_num.shape != out_num.shape:
        return DetectionComparison(0, np.inf, (f"shapes {list(ref_dets.shape)} vs "
                                               f"{list(out_dets.shape)}",), 1)
    rows = unexplained = tied_rows = 0
    max_abs, problems, tied = 0.0, [], []
    for b in range(ref_dets.shape[0]):
        a, o = ref_dets[b, : int(ref_num[b])], out_dets[b, : int(out_num[b])]
        rows += max(len(a), len(o))
        n, err = _matched(a, o, atol)
        max_abs = max(max_abs, err)
        if not n:
            continue
        found = [f"{n} rows without a partner"] if candidates is None else \
            explain_by_ties(o, candidates, b, atol)
        if found:
            problems += [f"image {b}: {p}" for p in found]
            unexplained += n if candidates is None else len(found)
        else:
            tied.append(b)
            tied_rows += n
    return DetectionComparison(rows, max_abs, tuple(problems), unexplained, tied_rows,
                               tuple(tied))
