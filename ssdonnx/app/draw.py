"""Detections on pictures: boxes, class names and scores drawn with Pillow."""

from __future__ import annotations

import colorsys

from PIL import Image, ImageDraw, ImageFont

from ..transforms import to_rgb

# Pictures with a shorter side than this (pixels) are enlarged before drawing, so that
# labels stay legible on small pictures; detection coordinates stay the original's.
DISPLAY_MIN_SIDE = 480
# ... but never beyond this longer side (pixels): a 1 x 1000 picture is not drawn
# 480 x 480000.
MAX_DRAWN_SIDE = 4096
# Label text height as a share of the drawn picture's shorter side.
TEXT_SHARE = 1 / 30


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class (hues spaced by the golden ratio)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def place_labels(boxes, sizes, canvas) -> list[tuple[float, float, float, float]]:
    """Where to put each box's label: rectangles (x1, y1, x2, y2) inside ``canvas``
    (width, height).

    boxes: [x1, y1, x2, y2] per label, most important first; sizes: (width, height) of
    each label. Each label takes the first of its spots (above the box's top-left
    corner, inside its top, below it, inside its bottom; then the same right-aligned),
    moved inside the canvas, that overlaps no label placed before it; if every spot
    does, the one that overlaps least.
    """
    W, H = canvas
    placed = []
    for (x1, y1, x2, y2), (w, h) in zip(boxes, sizes):
        spots = [(x, y) for x in (x1, x2 - w) for y in (y1 - h, y1, y2, y2 - h)]
        rects = []
        for x, y in spots:
            x = min(max(x, 0), max(W - w, 0))
            y = min(max(y, 0), max(H - h, 0))
            rects.append((x, y, x + w, y + h))
        overlaps = [sum(_overlap(r, p) for p in placed) for r in rects]
        placed.append(rects[overlaps.index(min(overlaps))])
    return placed


def draw_detections(image: Image.Image, detections: list[dict]) -> Image.Image:
    """A picture of ``image`` with each detection's box and "label score" drawn on it.

    detections: dicts with ``box`` [x1, y1, x2, y2] in pixels of ``image``, ``label``,
    ``class_id`` and ``score``, as ``ssdonnx detect`` writes them. Transparency is
    shown on white; a picture whose shorter side is below ``DISPLAY_MIN_SIDE`` is drawn
    enlarged to it (its longer side at most ``MAX_DRAWN_SIDE``), and the label text
    scales with the picture.
    """
    out = to_rgb(image)
    scale = max(1.0, min(DISPLAY_MIN_SIDE / min(out.size), MAX_DRAWN_SIDE / max(out.size)))
    if scale > 1:
        out = out.resize((round(out.width * scale), round(out.height * scale)),
                         Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(out)
    line = max(2, round(min(out.size) / 200))
    font = ImageFont.load_default(size=max(10, round(min(out.size) * TEXT_SHARE)))
    ranked = sorted(detections, key=lambda d: -d["score"])
    boxes = [[v * scale for v in d["box"]] for d in ranked]
    texts = [f"{d['label']} {d['score']:.2f}" for d in ranked]
    pad = line
    sizes = []
    for text in texts:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        sizes.append((right - left + 2 * pad, bottom - top + 2 * pad))
    labels = place_labels(boxes, sizes, out.size)
    # Lowest score first, so that the best detections are drawn on top.
    for d, box in reversed(list(zip(ranked, boxes))):
        draw.rectangle(box, outline=class_colour(d["class_id"]), width=line)
    for d, text, rect in reversed(list(zip(ranked, texts, labels))):
        draw.rectangle(rect, fill=class_colour(d["class_id"]))
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((rect[0] + pad - left, rect[1] + pad - top), text, fill=(0, 0, 0), font=font)
    return out
