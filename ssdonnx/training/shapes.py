"""A seeded synthetic detection dataset: circles, squares and triangles of random colour,
size and position, some overlapping, on noisy backgrounds; written in the VOC layout so
that training and evaluation read it through ``VOCDataset``, as they would real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..deploy.files import atomic_output, make_folder, write_text
from ..errors import InputError, OutputError

SHAPE_CLASSES = ("circle", "square", "triangle")
IMAGE_SIZE = (160, 120)        # width, height: not square, so the resize is exercised
SIZE_RANGE = (18, 64)          # object side in pixels by default: 18 <= side < 64
MAX_OBJECTS = 4
MAX_OVERLAP = 0.3              # IoU between two objects of one image at most this


def _iou(a, b) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def make_image(rng: np.random.Generator, size_range: tuple[int, int] = SIZE_RANGE):
    """One picture and its objects [(class name, (x1, y1, x2, y2) pixels, exclusive)],
    each object's side drawn uniformly from ``size_range`` (pixels, min <= side < max)."""
    W, H = IMAGE_SIZE
    base = rng.integers(40, 216, 3)
    noise = rng.normal(0, rng.uniform(5, 30), (H, W, 3))
    image = Image.fromarray((base + noise).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects = []
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        for _attempt in range(20):
            side = int(rng.integers(*size_range))
            x1, y1 = int(rng.integers(0, W - side + 1)), int(rng.integers(0, H - side + 1))
            box = (x1, y1, x1 + side, y1 + side)
            if all(_iou(box, b) <= MAX_OVERLAP for _, b in objects):
                break
        else:
            continue
        name = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        while np.abs(np.array(colour) - base).sum() < 150:   # visible on the background
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x2, y2 = box[2] - 1, box[3] - 1
        if name == "circle":
            draw.ellipse([x1, y1, x2, y2], fill=colour)
        elif name == "square":
            draw.rectangle([x1, y1, x2, y2], fill=colour)
        else:
            draw.polygon([(x1, y2), ((x1 + x2) / 2, y1), (x2, y2)], fill=colour)
        objects.append((name, box))
    return image, objects


def annotation_xml(filename: str, size, objects) -> str:
    W, H = size
    parts = [f"<annotation><filename>{filename}</filename><size><width>{W}</width>"
             f"<height>{H}</height><depth>3</depth></size>"]
    for name, (x1, y1, x2, y2) in objects:
        # VOC: 1-based inclusive pixel coordinates.
        parts.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox>"
                     f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax>"
                     f"<ymax>{y2}</ymax></bndbox></object>")
    parts.append("</annotation>\n")
    return "".join(parts)


def write_shapes(out, train: int, val: int, seed: int = 0, progress=None,
                 size_range: tuple[int, int] = SIZE_RANGE, force: bool = False) -> Path:
    """Write ``train`` + ``val`` images in the VOC layout under ``out``; object sides in
    pixels are drawn from ``size_range`` (small ones make a set for small objects).
    A folder that already holds a data set (image lists, pictures or annotations) is
    refused unless ``force``."""
    lo, hi = size_range
    if not 4 <= lo < hi <= min(IMAGE_SIZE):
        raise InputError(f"object sizes {lo} to {hi}: expected 4 <= min < max <= "
                         f"{min(IMAGE_SIZE)} pixels (the pictures are {IMAGE_SIZE[0]} x "
                         f"{IMAGE_SIZE[1]})")
    out = Path(out)
    held = [sub for sub in ("JPEGImages", "Annotations", "ImageSets")
            if (out / sub).is_dir() and any((out / sub).iterdir())]
    if held and not force:
        raise OutputError(f"{out} already holds a data set ({', '.join(held)}); pass --force "
                          "(force=True) to write into it, or choose another folder")
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        make_folder(out / sub)
    rng = np.random.default_rng(seed)
    ids = {"train": [], "val": []}
    for i in range(train + val):
        split = "train" if i < train else "val"
        image_id = f"{split}_{i:06d}"
        image, objects = make_image(rng, size_range)
        with atomic_output(out / "JPEGImages" / f"{image_id}.jpg", durable=False) as tmp:
            image.save(tmp, format="JPEG", quality=95)
        write_text(out / "Annotations" / f"{image_id}.xml",
                   annotation_xml(f"{image_id}.jpg", image.size, objects), durable=False)
        ids[split].append(image_id)
        if progress:
            progress(1)
    for split, names in ids.items():
        write_text(out / "ImageSets" / "Main" / f"{split}.txt",
                   "".join(f"{n}\n" for n in names))
    write_text(out / "ImageSets" / "Main" / "trainval.txt",
               "".join(f"{n}\n" for n in ids["train"] + ids["val"]))
    return out
