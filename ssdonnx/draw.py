"""Detections on pictures: boxes, class names and scores drawn with Pillow."""

from __future__ import annotations

import colorsys

from PIL import Image, ImageDraw, ImageFont


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class (hues spaced by the golden ratio)."""
    hue = (class_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: Image.Image, detections: list[dict]) -> Image.Image:
    """A copy of ``image`` with each detection's box and "label score" drawn on it.

    detections: dicts with ``box`` [x1, y1, x2, y2] in pixels, ``label``, ``class_id``
    and ``score``, as ``ssdonnx detect`` writes them.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 150))
    font = ImageFont.load_default(size=max(11, round(min(out.size) / 30)))
    for det in sorted(detections, key=lambda d: d["score"]):
        colour = class_colour(det["class_id"])
        x1, y1, x2, y2 = det["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = f"{det['label']} {det['score']:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        h = bottom - top
        ty = y1 - h - 2 * width if y1 - h - 2 * width >= 0 else y1
        draw.rectangle([x1, ty, x1 + (right - left) + 2 * width, ty + h + 2 * width],
                       fill=colour)
        draw.text((x1 + width, ty + width - (top - y1)), text, fill=(0, 0, 0), font=font)
    return out
