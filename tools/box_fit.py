"""How well a detector's boxes fit the objects, beyond mAP: per held-out picture, the IoU
of its best-scoring box with the truth it overlaps most, against the box a detector
that only learned "objects are big" would draw (the whole picture), and how much bigger
or smaller than its object that box is.

    python tools/box_fit.py DETECTOR DATA [--image-set val] [--score 0.5] [--annotations DIR]

DETECTOR: an exported detector or a checkpoint; DATA: a VOC folder or COCO JSON, as
``ssdonnx evaluate`` takes them. Pictures that cannot be read are named in one line each
and left out; a detector that finds nothing says so, with the best score it gave.
"""
import argparse
import sys

import numpy as np
import torch

from ssdonnx.boxes import box_iou
from ssdonnx.deploy.predict import Detector
from ssdonnx.errors import DataError, InputError
from ssdonnx.training.data import dataset_classes, read_records


def best_match(box, truths) -> tuple[float, int]:
    """The IoU of ``box`` [1, 4] with the truth [n, 4] it overlaps most, and that truth."""
    iou = box_iou(torch.from_numpy(box), torch.from_numpy(truths))[0]
    return float(iou.max()), int(iou.argmax())


def area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("detector")
    parser.add_argument("data")
    parser.add_argument("--image-set", default="val")
    parser.add_argument("--score", type=float, default=0.5)
    parser.add_argument("--annotations", default=None, help="the XML folder, as `ssdonnx "
                        "evaluate --annotations` takes it")
    args = parser.parse_args()
    try:
        fit(args)
    except InputError as exc:         # a detector or data set that cannot be used
        parser.exit(2, f"{parser.prog}: error: {str(exc).splitlines()[0]}\n")


def fit(args):
    detector = Detector(args.detector, provider="cpu", score=args.score)
    records = read_records(args.data, args.image_set,
                           dataset_classes(args.data, args.annotations),
                           annotations=args.annotations)
    whole = np.array([[0.0, 0.0, 1.0, 1.0]], np.float32)
    objects, top_iou, whole_iou, area_ratio, unread, best = 0, [], [], [], [], None
    for record in records:
        try:
            detections = detector(record.picture)
        except DataError as exc:
            unread.append(str(exc))
            print(f"  left out: {exc}", file=sys.stderr)
            continue
        truths = record.targets[:, :4]
        objects += len(truths)
        whole_iou.append(best_match(whole, truths)[0])
        if detections.best_score is not None:
            best = max(best or 0.0, detections.best_score)
        if len(detections) == 0:
            top_iou.append(0.0)
            continue
        w, h = detections.width, detections.height
        boxes = (detections.boxes / np.array([w, h, w, h])).astype(np.float32)
        iou, truth = best_match(boxes[:1], truths)
        top_iou.append(iou)
        area_ratio.append(area(boxes[:1])[0] / area(truths[truth:truth + 1])[0])

    top_iou, whole_iou = np.array(top_iou), np.array(whole_iou)
    read = len(records) - len(unread)
    print(f"{read} pictures of {args.data} ({args.image_set}), {objects} objects, "
          f"score >= {args.score}" + (f"; {len(unread)} unreadable, left out" if unread else ""))
    if not read:
        return
    print(f"  pictures with a detection: {len(area_ratio)}/{read}")
    if not area_ratio:
        print("  no detection reached the score on any picture (best score seen: "
              + ("none" if best is None else f"{best:.4f}") + "); a lower --score shows more")
        return
    print(f"  best-scoring box vs its truth: mean IoU {top_iou.mean():.3f}, "
          f"IoU >= 0.5 in {(top_iou >= 0.5).mean():.0%} of the pictures (none found: 0)")
    print(f"  the whole picture as the box:  mean IoU {whole_iou.mean():.3f}, "
          f"IoU >= 0.5 in {(whole_iou >= 0.5).mean():.0%}")
    print(f"  best-scoring box's area / its truth's: median {np.median(area_ratio):.2f}, "
          f"quartiles {np.quantile(area_ratio, 0.25):.2f} to {np.quantile(area_ratio, 0.75):.2f}")


if __name__ == "__main__":
    main()
