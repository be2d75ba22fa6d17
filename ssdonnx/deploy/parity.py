"""PyTorch against an ONNX runtime: named tolerances, the cases checked, comparisons, and
the report table. ``verify`` is what ``ssdonnx verify`` and every export run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, OnnxFileError
from .detection_parity import DETECTION_ATOL, Candidates, compare_detections
from .files import file_sha256
from .graphs import build_graph, example_inputs, normalised
from .onnxfile import INPUT_NAMES, OUTPUT_NAMES, GraphInfo, check_runnable, load_proto, read_info

# Network outputs: float32 convolutions in a different kernel order (oneDNN in PyTorch,
# MLAS in onnxruntime) accumulate differences of about 1e-5 relative over the VGG stack.
NETWORK_RTOL, NETWORK_ATOL = 1e-3, 1e-4
# Losses: sums over B * P terms taken in a different order.
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-5

TOLERANCES = {"loc": (NETWORK_RTOL, NETWORK_ATOL), "conf": (NETWORK_RTOL, NETWORK_ATOL),
              "scores": (NETWORK_RTOL, NETWORK_ATOL), "boxes": (NETWORK_RTOL, NETWORK_ATOL),
              "loss_l": (LOSS_RTOL, LOSS_ATOL), "loss_c": (LOSS_RTOL, LOSS_ATOL)}



@dataclass(frozen=True)
class Case:
    """One input a graph is checked on. ``inputs``: ``random`` (pictures like photos;
    network outputs and valid targets for the loss), ``flat`` (pictures of one colour:
    the mean colour, which pre-processes to all zeros, black, white, and half mean
    colour), ``pictures`` (the picture files ``files``), ``zeros`` (loss: loc and conf
    all 0) or ``empty`` (loss: no objects, G = 0)."""
    batch: int
    objects: int = 0
    inputs: str = "random"
    files: tuple[Path, ...] = ()

    def describe(self, kind: str, seed: int) -> str:
        size = f"B={self.batch}" + (f", G={self.objects}" if kind == "loss" else "")
        what = {"random": f"seed {seed}", "flat": "flat pictures",
                "pictures": f"pictures of {self.files[0].parent.name if self.files else ''}",
                "zeros": "loc, conf = 0", "empty": "no objects"}[self.inputs]
        return f"{size}, {what}"


def cases_for(kind: str, batch: int | None = None, pictures=None) -> list[Case]:
    """The cases ``verify`` checks: batch sizes other than the export example's (2; and
    1, which torch.export likes to specialise), and inputs that reach the graphs'
    guards (L2Norm on all-zero features, the loss with nothing to learn from); for the
    network and the detector also ``pictures`` (files), if given."""
    if kind == "loss":
        if batch is not None:
            return [Case(batch, 4), Case(batch, 4, "zeros"), Case(batch, 0, "empty")]
        return [Case(3, 5), Case(1, 1), Case(2, 3, "zeros"), Case(2, 0, "empty")]
    cases = [Case(batch), Case(batch, inputs="flat")] if batch is not None else \
        [Case(3), Case(1), Case(4, inputs="flat")]
    if pictures:
        cases.append(Case(len(pictures), inputs="pictures", files=tuple(pictures)))
    return cases


def flat_pictures(batch: int, cfg, seed: int = 0) -> torch.Tensor:
    """Pictures without texture as the network of ``cfg`` takes them, [B, 3, S, S]: the
    mean colour (all zeros after pre-processing), black, white, and the mean colour on
    the left half of a random picture, in turn. Where a network's features are all zero,
    guards such as L2Norm's epsilon decide the output."""
    S = cfg.input_size
    gen = torch.Generator().manual_seed(seed)
    half = normalised(torch.rand(3, S, S, generator=gen) * 255, cfg)
    half[:, :, : S // 2] = 0
    kinds = [torch.zeros(3, S, S), normalised(torch.zeros(3, S, S), cfg),
             normalised(torch.full((3, S, S), 255.0), cfg), half]
    return torch.stack([kinds[i % len(kinds)] for i in range(batch)]).contiguous()


def case_inputs(case: Case, kind: str, cfg, seed: int) -> dict[str, torch.Tensor]:
    inputs = example_inputs(kind, cfg, case.batch, max(case.objects, 1), seed=seed)
    picture_input = INPUT_NAMES[kind][0]
    if case.inputs == "flat":
        inputs[picture_input] = flat_pictures(case.batch, cfg, seed)
    elif case.inputs == "pictures":
        from ..pictures import load_batch

        inputs[picture_input] = torch.from_numpy(load_batch(case.files, cfg))
    elif case.inputs == "zeros":
        inputs["loc"] = torch.zeros_like(inputs["loc"])
        inputs["conf"] = torch.zeros_like(inputs["conf"])
    elif case.inputs == "empty":
        inputs["targets"] = inputs["targets"][:, :0]
    return inputs


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
    # Detections: rows that differ between the runtimes as NMS ties allow (passing).
    tied: int = 0

    @property
    def passed(self) -> bool:
        return self.mismatched == 0

    @property
    def result(self) -> str:
        if not self.passed:
            return f"FAIL ({self.mismatched}/{self.total} differ)"
        return f"PASS ({self.tied} rows: NMS ties)" if self.tied else "PASS"


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


def reference_outputs(graph, kind: str, inputs: dict) -> dict:
    with torch.no_grad():
        outs = graph(*inputs.values())
    return {name: t.detach().cpu().numpy() for name, t in zip(OUTPUT_NAMES[kind], outs)}


def reference_candidates(graph, images: torch.Tensor) -> Candidates:
    """The candidates the detector ``graph`` (``SSDDetector``) chooses from on ``images``."""
    with torch.no_grad():
        boxes, scores = graph.candidates(images)
    return Candidates(boxes.numpy(), scores.numpy(), **graph.thresholds())


def compare_outputs(case: str, kind: str, ref: dict, out: dict,
                    candidates: Candidates | None = None) -> list[ParityRow]:
    """Rows for each output. Detections are compared as sets per image; with the
    reference's ``candidates``, sets that differ pass when NMS ties explain them
    (``detection_parity``), and so do the counts of those images."""
    if kind != "detector":
        return [compare_arrays(case, name, ref[name], out[name], *TOLERANCES[name])
                for name in OUTPUT_NAMES[kind]]
    found = compare_detections(ref["detections"], ref["num_detections"], out["detections"],
                               out["num_detections"], candidates)
    how = f"{DETECTION_ATOL:g} (matched as sets" + (", up to NMS ties)" if candidates else ")")
    rows = [ParityRow(case, "detections", found.max_abs, found.max_abs / DETECTION_ATOL, how,
                      found.unexplained, found.rows, tied=found.tied_rows)]
    ref_num, out_num = np.asarray(ref["num_detections"]), np.asarray(out["num_detections"])
    counts = compare_arrays(case, "num_detections", ref_num, out_num, 0, 0)
    if counts.mismatched and ref_num.shape == out_num.shape:
        untied = [b for b in np.flatnonzero(ref_num != out_num) if b not in found.tied_images]
        counts = ParityRow(case, "num_detections", counts.max_abs, float(bool(untied)),
                           "exact, or as NMS ties decide", len(untied), counts.total,
                           tied=counts.mismatched - len(untied))
    return rows + [counts]


def check_weights(info: GraphInfo, weights) -> None:
    """The reference must use the weights the file was exported with."""
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


def check_parity(info: GraphInfo, session, weights=None, cases: list[Case] | None = None,
                 seed: int = 1, progress=None) -> list[ParityRow]:
    """Rebuild the PyTorch reference of an ssdonnx file and compare it with ``session``
    (anything with ``run(**inputs) -> dict``) on fresh inputs, one set per case."""
    check_weights(info, weights)
    graph = build_graph(info.kind, info.config, weights, info.thresholds or None)
    rows = []
    for i, case in enumerate(cases or cases_for(info.kind)):
        inputs = case_inputs(case, info.kind, info.config, seed + i)
        name = case.describe(info.kind, seed + i)
        ref = reference_outputs(graph, info.kind, inputs)
        out = session.run(**inputs)
        candidates = reference_candidates(graph, inputs["images"]) \
            if info.kind == "detector" else None
        rows += compare_outputs(name, info.kind, ref, out, candidates)
        if progress:
            progress(name)
    return rows


def format_table(rows: list[ParityRow]) -> str:
    """The rows as a text table; ``err/bound`` is the worst error over its bound
    |err| <= atol + rtol * |ref| (the ``tolerance`` column), so 1 is the limit."""
    header = ("case", "output", "max abs err", "err/bound", "tolerance", "result")
    body = [(r.case, r.output, f"{r.max_abs:.3g}", f"{r.worst:.3g}", r.tolerance,
             r.result)
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


@dataclass
class Verification:
    """One file checked against its PyTorch reference: parity rows for float32 graphs,
    detection agreement for int8 detectors."""
    name: Path
    info: GraphInfo
    runtime: str                 # "onnxruntime cpu", "onnxruntime cuda", "onnx reference"
    rows: list[ParityRow] = field(default_factory=list)
    agreement: Agreement | None = None

    @property
    def passed(self) -> bool:
        if self.agreement is not None:
            return self.agreement.passed
        return bool(self.rows) and all(r.passed for r in self.rows)

    def report(self) -> str:
        if self.agreement is not None:
            return self.agreement.summary()
        return (f"{format_table(self.rows)}\n{'PASS' if self.passed else 'FAIL'}: PyTorch "
                f"vs {self.runtime}, {self.info.kind} graph {self.name}")


RUNTIMES = ("onnxruntime", "reference")


def open_runtime(path, runtime: str = "onnxruntime", provider: str = "auto",
                 threads: int | None = None):
    """A session on ``path`` with ``run(**inputs) -> dict``, and how to name it."""
    if runtime == "reference":
        from .reference_runtime import ReferenceSession

        return ReferenceSession(path), "the ONNX reference implementation"
    if runtime != "onnxruntime":
        raise InputError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    from .runtime import Session

    sess = Session(path, provider, threads)
    return sess, f"onnxruntime ({sess.provider})"


def verify(path, weights=None, provider: str = "auto", batch: int | None = None,
           seed: int = 1, data=None, runtime: str = "onnxruntime",
           threads: int | None = None, name=None, log=None, progress=None) -> Verification:
    """Rebuild the PyTorch reference of the ssdonnx file ``path`` and compare.

    Float32 graphs: outputs within the named tolerances on the cases of ``cases_for``
    (``batch`` replaces their batch sizes; ``data``, a folder, adds its first
    ``PICTURES_CASE`` pictures for the network and the detector). int8 detectors:
    detections matched with float32's on pictures (``data``, or the calibration folder
    the file names).
    ``runtime``: ``onnxruntime`` on ``provider``, or ``reference``, the ONNX reference
    implementation (``onnx.reference``), independent of onnxruntime.
    """
    name = Path(name or path)
    proto = load_proto(path)
    info = read_info(path, proto=proto)
    check_runnable(info, proto)
    del proto
    check_weights(info, weights)
    session, how = open_runtime(path, runtime, provider, threads)
    if log and getattr(session, "note", ""):
        log(session.note)
    result = Verification(name, info, how)
    if info.precision == "int8":
        from ..pictures import collect_pictures, load_batch

        folder = data or info.calibration["folder"]
        if data is None and not Path(folder).is_dir():
            raise OnnxFileError(f"{name} was calibrated on {folder}, which is gone; pass "
                                "--data with pictures to compare on")
        files = collect_pictures(folder, info.calibration["pictures"] if data is None else
                                 INT8_VERIFY_PICTURES)
        if log:
            log(f"comparing int8 {name} with float32 on {len(files)} pictures")
        images = load_batch(files, info.config)
        result.agreement = check_int8(info, session, weights, images, progress=progress)
    else:
        if log:
            log(f"verifying {name} ({info.kind}, {info.config.name}) on {how}")
        pictures = None
        if data is not None and info.kind != "loss":
            from ..pictures import collect_pictures

            pictures = collect_pictures(data, PICTURES_CASE)
        result.rows = check_parity(info, session, weights,
                                   cases_for(info.kind, batch, pictures), seed, progress)
    if log:
        log(result.report())
    return result


# Pictures an int8 detector is compared on when given a folder (the first N by path),
# and a float32 graph's case of pictures.
INT8_VERIFY_PICTURES = 64
PICTURES_CASE = 8
