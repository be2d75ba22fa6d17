"""PyTorch against onnxruntime: named tolerances, comparisons, and the report table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .graphs import OUTPUT_NAMES, build_graph, example_inputs

# Network outputs: float32 convolutions in a different kernel order (oneDNN in PyTorch,
# MLAS in onnxruntime) accumulate differences of about 1e-5 relative over the VGG stack.
NETWORK_RTOL, NETWORK_ATOL = 1e-3, 1e-4
# Losses: sums over B * P terms taken in a different order.
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-5
# Detections: normalised box coordinates and softmax scores after the network.
DETECTION_ATOL = 1e-4

TOLERANCES = {"loc": (NETWORK_RTOL, NETWORK_ATOL), "conf": (NETWORK_RTOL, NETWORK_ATOL),
              "loss_l": (LOSS_RTOL, LOSS_ATOL), "loss_c": (LOSS_RTOL, LOSS_ATOL)}

# Batch size and objects per image of the two verification inputs: both differ from the
# export example (batch 2, 3 objects); 1 is the size torch.export likes to specialise.
VERIFY_CASES = ((3, 5), (1, 1))


@dataclass
class ParityRow:
    """One output compared on one case. ``worst`` is the largest error over the bound
    that applies to it (as in ``numpy.isclose``: atol + rtol * |reference|), so the row
    passes when it is at most 1."""
    case: str
    output: str
    max_abs: float
    worst: float
    tolerance: str
    mismatched: int
    total: int

    @property
    def passed(self) -> bool:
        return self.mismatched == 0


def compare_arrays(case: str, name: str, ref, out, rtol: float, atol: float) -> ParityRow:
    ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
    if ref.shape != out.shape:
        return ParityRow(case, name, float("inf"), float("inf"),
                         f"shape {list(ref.shape)} vs {list(out.shape)}", 1, 1)
    diff = np.abs(ref - out)
    bound = atol + rtol * np.abs(ref)
    bad = ~(diff <= bound)
    if atol == rtol == 0:
        worst, tolerance = float(bad.any()), "exact"
    else:
        worst = float((diff / bound).max(initial=0))
        tolerance = f"{atol:g} + {rtol:g} * |ref|"
    return ParityRow(case, name, float(diff.max(initial=0)), worst, tolerance,
                     int(bad.sum()), int(ref.size))


def compare_detections(case: str, ref_dets, ref_num, out_dets, out_num,
                       atol: float = DETECTION_ATOL) -> ParityRow:
    """Detections as sets per image: every kept row of one side must have a row of the
    same class on the other with box and score within ``atol`` (NMS ties may order
    equal scores differently, so rows are matched, not compared by position)."""
    ref_dets, out_dets = np.asarray(ref_dets), np.asarray(out_dets)
    ref_num, out_num = np.asarray(ref_num), np.asarray(out_num)
    mismatched, total, max_abs = 0, 0, 0.0
    for b in range(ref_dets.shape[0]):
        a = ref_dets[b, : int(ref_num[b])]
        o = out_dets[b, : int(out_num[b])] if b < out_dets.shape[0] else out_dets[:0, 0]
        total += max(len(a), len(o))
        unused = list(range(len(o)))
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
                mismatched += 1
        mismatched += len(unused)
    if ref_dets.shape != out_dets.shape:
        mismatched = max(mismatched, 1)
    return ParityRow(case, "detections", max_abs, max_abs / atol,
                     f"{atol:g} (matched as sets)", mismatched, total)


def reference_outputs(graph, kind: str, inputs: dict) -> dict:
    with torch.no_grad():
        outs = graph(*inputs.values())
    return {name: t.detach().cpu().numpy() for name, t in zip(OUTPUT_NAMES[kind], outs)}


def compare_outputs(case: str, kind: str, ref: dict, out: dict) -> list[ParityRow]:
    if kind == "detector":
        rows = [compare_detections(case, ref["detections"], ref["num_detections"],
                                   out["detections"], out["num_detections"])]
        rows.append(compare_arrays(case, "num_detections", ref["num_detections"],
                                   out["num_detections"], 0, 0))
        return rows
    return [compare_arrays(case, name, ref[name], out[name], *TOLERANCES[name])
            for name in OUTPUT_NAMES[kind]]


def check_weights(info, weights) -> None:
    """The reference must use the weights the file was exported with."""
    from .export import OnnxFileError, file_sha256

    if info.kind == "loss":
        if weights is not None:
            raise OnnxFileError(f"{info.path} is a loss graph: it has no weights")
        return
    if info.weights.startswith("sha256:"):
        if weights is None:
            raise OnnxFileError(f"{info.path} was exported from a checkpoint; pass the same "
                                "checkpoint with --weights")
        if f"sha256:{file_sha256(weights)}" != info.weights:
            raise OnnxFileError(f"{weights} is not the checkpoint {info.path} was exported "
                                "from (sha256 differs)")
    elif weights is not None:
        raise OnnxFileError(f"{info.path} was exported without a checkpoint "
                            f"({info.weights} initialisation); drop --weights")


def check_parity(info, session, weights=None, cases=VERIFY_CASES, seed: int = 1,
                 progress=None) -> list[ParityRow]:
    """Rebuild the PyTorch reference of an ssdonnx file and compare it with ``session``
    on fresh random inputs (one per case: batch size, objects per image)."""
    check_weights(info, weights)
    graph = build_graph(info.kind, info.config, weights, info.thresholds or None)
    rows = []
    for i, (batch, objects) in enumerate(cases):
        inputs = example_inputs(info.kind, info.config, batch, objects, seed=seed + i)
        case = f"B={batch}" + (f", G={objects}" if info.kind == "loss" else "") + \
            f", seed {seed + i}"
        ref = reference_outputs(graph, info.kind, inputs)
        out = session.run(**inputs)
        rows += compare_outputs(case, info.kind, ref, out)
        if progress:
            progress(case)
    return rows


def format_table(rows: list[ParityRow]) -> str:
    """The rows as a text table; ``err/bound`` is the worst error over its bound
    |err| <= atol + rtol * |ref| (the ``tolerance`` column), so 1 is the limit."""
    header = ("case", "output", "max abs err", "err/bound", "tolerance", "result")
    body = [(r.case, r.output, f"{r.max_abs:.3g}", f"{r.worst:.3g}", r.tolerance,
             "PASS" if r.passed else f"FAIL ({r.mismatched}/{r.total} differ)")
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# int8 against float32: not bit parity. Detections with a score of at least INT8_SCORE
# are compared per picture; two agree when their classes are equal and their boxes
# overlap by IoU >= INT8_IOU. The check passes when each side finds at least
# INT8_MIN_AGREEMENT of the other's detections.
INT8_SCORE = 0.3
INT8_IOU = 0.5
INT8_MIN_AGREEMENT = 0.9


@dataclass
class Agreement:
    """int8 detections held against float32 ones on the same pictures."""
    pictures: int
    float32: int             # float32 detections with score >= INT8_SCORE
    int8: int
    matched: int
    score_diff: float        # mean |score difference| over matched pairs

    @property
    def found_of_float32(self) -> float:
        return self.matched / self.float32 if self.float32 else 1.0

    @property
    def found_of_int8(self) -> float:
        return self.matched / self.int8 if self.int8 else 1.0

    @property
    def passed(self) -> bool:
        return min(self.found_of_float32, self.found_of_int8) >= INT8_MIN_AGREEMENT

    def summary(self) -> str:
        return (f"int8 vs float32 on {self.pictures} pictures (scores >= {INT8_SCORE}, same "
                f"class, IoU >= {INT8_IOU}): float32 {self.float32} detections, int8 "
                f"{self.int8}, matched {self.matched}: {self.found_of_float32:.1%} of "
                f"float32's and {self.found_of_int8:.1%} of int8's found by the other "
                f"(bound {INT8_MIN_AGREEMENT:.0%}), mean |score difference| "
                f"{self.score_diff:.4f}: {'PASS' if self.passed else 'FAIL'}")


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod((rb - lt).clip(min=0), axis=1)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def compare_detection_sets(ref: list[np.ndarray], out: list[np.ndarray]) -> Agreement:
    """Per picture, rows [k, 6] (x1, y1, x2, y2, score, class) of each side: in order of
    reference score, each reference detection takes the unmatched detection of its class
    that overlaps it most, if by IoU >= INT8_IOU."""
    n_ref = n_out = matched = 0
    diffs = []
    for a, b in zip(ref, out):
        a, b = a[a[:, 4] >= INT8_SCORE], b[b[:, 4] >= INT8_SCORE]
        n_ref, n_out = n_ref + len(a), n_out + len(b)
        free = np.ones(len(b), bool)
        for row in a[np.argsort(-a[:, 4], kind="stable")]:
            candidates = free & (b[:, 5] == row[5]) if len(b) else free
            if not candidates.any():
                continue
            iou = np.where(candidates, _box_iou(row[:4], b[:, :4]), -1)
            j = int(iou.argmax())
            if iou[j] >= INT8_IOU:
                free[j] = False
                matched += 1
                diffs.append(abs(float(b[j, 4]) - float(row[4])))
    return Agreement(len(ref), n_ref, n_out, matched, float(np.mean(diffs)) if diffs else 0.0)


def check_int8(info, session, weights, images: np.ndarray, batch: int = 8,
               progress=None) -> Agreement:
    """The int8 detector in ``session`` against its float32 PyTorch reference on
    ``images`` [N, 3, S, S] (pre-processed pictures)."""
    check_weights(info, weights)
    graph = build_graph("detector", info.config, weights, info.thresholds or None)
    ref, out = [], []
    for start in range(0, len(images), batch):
        x = images[start:start + batch]
        r = reference_outputs(graph, "detector", {"images": torch.from_numpy(x)})
        o = session.run(images=x)
        for dets, num, odets, onum in zip(r["detections"], r["num_detections"],
                                          o["detections"], o["num_detections"]):
            ref.append(dets[: int(num)])
            out.append(np.asarray(odets)[: int(onum)])
        if progress:
            progress(len(x))
    return compare_detection_sets(ref, out)
