"""Detection quality on a data set: VOC mAP@0.5 (VOC2007 11-point and area AP, computed
here) and COCO AP@[.5:.95], AP50, AP75 and per-class AP (computed by pycocotools, the
COCO authors' evaluator: ``pip install ssdonnx[coco]``), from VOC or COCO data alike.

The two agree where they measure the same thing: COCO's AP50 and the VOC area AP are
both the area under the precision envelope at IoU 0.5; COCO samples it at 101 recall
points and counts a detection of a truth of its class with IoU >= 0.5 once, as VOC does,
so they differ by the sampling (tests/test_own_data.py holds them within 0.02).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .data import VOCDataset

IOU_THRESHOLD = 0.5


def average_precision(recall: np.ndarray, precision: np.ndarray, eleven_point: bool) -> float:
    """AP from a precision/recall curve: VOC2007's 11-point interpolation, or the area
    under the monotone precision envelope (VOC2010 and later)."""
    if eleven_point:
        return float(np.mean([precision[recall >= t].max(initial=0.0)
                              for t in np.arange(0.0, 1.1, 0.1)]))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod((rb - lt).clip(min=0), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


@dataclass
class MeanAP:
    per_class: dict          # class name -> {"ap07": float, "ap": float, "positives": int}
    map07: float
    map: float
    images: int = 0

    def as_dict(self) -> dict:
        return {"map07": self.map07, "map": self.map, "per_class": self.per_class,
                "images": self.images}

    def table(self, how: str = "") -> str:
        lines = [f"{'class':16s} {'AP (VOC07 11-pt)':>17s} {'AP (area)':>10s} {'objects':>8s}"]
        for name, v in self.per_class.items():
            lines.append(f"{name:16s} {v['ap07']:17.4f} {v['ap']:10.4f} {v['positives']:8d}")
        lines.append(f"{'mAP':16s} {self.map07:17.4f} {self.map:10.4f}   "
                     f"({self.images} images{', ' + how if how else ''})")
        return "\n".join(lines)


def voc_map(detections, truths, class_names) -> MeanAP:
    """detections: per image, array [k, 6] (x1, y1, x2, y2, score, class 1..C-1);
    truths: per image, (targets [n, 5] with labels 0..C-2, difficult bool [n]).
    Boxes normalised; a detection matches an unmatched truth of its class with IoU >=
    0.5 (the best one); matches to difficult truths count neither way, as in VOC."""
    per_class = {}
    for c, name in enumerate(class_names, start=1):
        scores, image_ids, boxes = [], [], []
        for i, det in enumerate(detections):
            mine = det[det[:, 5] == c]
            scores += mine[:, 4].tolist()
            image_ids += [i] * len(mine)
            boxes += list(mine[:, :4])
        gts = [(t[t[:, 4] == c - 1, :4], d[t[:, 4] == c - 1]) for t, d in truths]
        positives = int(sum((~d).sum() for _, d in gts))
        used = [np.zeros(len(g), bool) for g, _ in gts]
        tp, fp = [], []
        for k in np.argsort(-np.array(scores), kind="stable"):
            g, difficult = gts[image_ids[k]]
            hit, j = False, -1
            if len(g):
                ious = _iou(np.asarray(boxes[k]), g)
                j = int(ious.argmax())
                hit = ious[j] >= IOU_THRESHOLD
            if hit and difficult[j]:
                continue
            if hit and not used[image_ids[k]][j]:
                used[image_ids[k]][j] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / max(positives, 1)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        per_class[name] = {"ap07": average_precision(recall, precision, True),
                           "ap": average_precision(recall, precision, False),
                           "positives": positives}
    scored = [v for v in per_class.values() if v["positives"] > 0]
    return MeanAP(per_class, float(np.mean([v["ap07"] for v in scored])) if scored else 0.0,
                  float(np.mean([v["ap"] for v in scored])) if scored else 0.0,
                  len(detections))


def run_detector(detector, dataset: VOCDataset, batch: int = 16, progress=None):
    """Detections of ``detector`` (``ssdonnx.Detector``: its ``predict`` on pre-processed
    pictures) on every image of ``dataset``, and the data set's truths (difficult objects
    kept, flagged)."""
    detections, truths = [], []
    for start in range(0, len(dataset), batch):
        idx = range(start, min(start + batch, len(dataset)))
        # The annotations were read and checked when the set was opened.
        images = np.stack([dataset.preprocess(dataset.image(i)).numpy() for i in idx])
        detections += detector.predict(images)
        for i in idx:
            targets, difficult, _ = dataset.annotation(i)
            truths.append((targets, difficult))
        if progress:
            progress(len(idx))
    return detections, truths


def evaluation_set(root, image_set: str, cfg, **opening) -> VOCDataset:
    """The data set ``evaluate`` reads: pictures at the network's size, difficult
    objects kept (and flagged); ``opening``: ``VOCDataset``'s ``annotations``,
    ``skip_bad``, ``progress``."""
    return VOCDataset.for_config(root, image_set, cfg, keep_difficult=True, **opening)


def evaluate(detector, dataset: VOCDataset, batch: int = 16, progress=None) -> MeanAP:
    """VOC mAP@0.5 of ``detector`` (``ssdonnx.Detector``) on ``dataset``."""
    detections, truths = run_detector(detector, dataset, batch, progress)
    return voc_map(detections, truths, dataset.classes)


@dataclass
class CocoAP:
    """COCO's metrics (pycocotools): AP averaged over IoU 0.5:0.95, at 0.5 and 0.75, and
    per class (over IoU 0.5:0.95); -1 where a class has no truths."""
    ap: float
    ap50: float
    ap75: float
    per_class: dict
    images: int = 0

    def as_dict(self) -> dict:
        return {"ap": self.ap, "ap50": self.ap50, "ap75": self.ap75,
                "per_class": self.per_class, "images": self.images}

    def table(self) -> str:
        lines = [f"{'class':16s} {'AP@[.5:.95]':>12s}"]
        lines += [f"{name:16s} {v:12.4f}" for name, v in self.per_class.items()]
        lines.append(f"{'COCO':16s} {self.ap:12.4f}   AP50 {self.ap50:.4f}  AP75 "
                     f"{self.ap75:.4f}   ({self.images} images, pycocotools)")
        return "\n".join(lines)


def coco_map(detections, truths, sizes, class_names) -> CocoAP:
    """COCO AP of ``detections`` against ``truths`` (as ``voc_map`` takes them) on
    pictures of ``sizes`` [(width, height)] pixels, by pycocotools. Difficult truths (and
    COCO's crowd regions) are COCO's ignored regions: matching one counts neither way."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise InputError("COCO AP needs pycocotools: pip install 'ssdonnx[coco]'") from None
    images, annotations, results = [], [], []
    for i, ((targets, difficult), dets, (W, H)) in enumerate(zip(truths, detections, sizes)):
        images.append({"id": i, "width": int(W), "height": int(H)})
        scale = np.array([W, H, W, H], dtype=np.float64)
        for box, label, crowd in zip(targets[:, :4] * scale, targets[:, 4], difficult):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i,
                                "category_id": int(label) + 1, "iscrowd": int(crowd),
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                                "area": float(w * h)})
        for row in dets:
            box = row[:4] * scale
            results.append({"image_id": i, "category_id": int(row[5]), "score": float(row[4]),
                            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                     float(box[3] - box[1])]})
    categories = [{"id": c, "name": n} for c, n in enumerate(class_names, start=1)]
    with contextlib.redirect_stdout(io.StringIO()):      # pycocotools prints its steps
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": categories}
        truth.createIndex()
        found = truth.loadRes(results) if results else COCO()
        if not results:
            found.dataset = {"images": images, "annotations": [], "categories": categories}
            found.createIndex()
        run = COCOeval(truth, found, "bbox")
        run.evaluate()
        run.accumulate()
        run.summarize()
    # precision: [IoU thresholds, recall points, classes, areas, max detections]
    precision = run.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return CocoAP(float(run.stats[0]), float(run.stats[1]), float(run.stats[2]), per_class,
                  len(images))


def evaluate_coco(detector, dataset: VOCDataset, batch: int = 16, progress=None
                  ) -> tuple[MeanAP, CocoAP]:
    """VOC mAP and COCO AP of ``detector`` on ``dataset`` from one pass over it."""
    detections, truths = run_detector(detector, dataset, batch, progress)
    sizes = [dataset.annotation(i)[2] for i in range(len(dataset))]
    return (voc_map(detections, truths, dataset.classes),
            coco_map(detections, truths, sizes, dataset.classes))
