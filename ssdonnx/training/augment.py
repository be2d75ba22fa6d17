"""Training augmentation: the SSD paper's, as the seed's code base runs it, and a simple one.

The SSD paper (Liu et al. 2016, sec. 2.2 "Data augmentation" and sec. 3.6) trains with
photometric distortion, a zoom-out ("expand") onto a canvas filled with the mean colour,
an IoU-constrained random sample crop and a horizontal mirror, then resizes to the input
size; its table 2 credits the sampling with +8.8 mAP on VOC2007 and sec. 3.6 the zoom-out
with 2-3 more. The seed's code base (pytorch_advanced, after ssd.pytorch's
``utils/augmentations.py``) runs the same steps in that order.

Every step takes and returns pixel boxes: ``image`` float32 [H, W, 3] RGB in 0..255,
``boxes`` float32 [n, 4] (x1, y1, x2, y2) in pixels of that image, ``labels`` [n]. All
randomness comes from the NumPy generator passed in, so a caller decides how draws differ
between images, epochs and workers (``VOCDataset`` derives one per image and epoch).
"""

from __future__ import annotations

import numpy as np

from ..config import SEED_MEAN_RGB

# Photometric distortion (ssd.pytorch PhotometricDistort; the paper's sec. 2.2 cites
# Howard's photo-metric distortions): each change is applied with probability 1/2.
BRIGHTNESS_DELTA = 32.0           # added to every channel, uniform in +-32
CONTRAST_RANGE = (0.5, 1.5)       # every channel multiplied by one factor
SATURATION_RANGE = (0.5, 1.5)     # HSV saturation multiplied
HUE_DELTA = 18.0                  # HSV hue shifted, in degrees
# Zoom out (paper sec. 3.6): with probability 1/2, place the image on a canvas of up to 4x
# its side, filled with the mean colour, so that objects become small.
EXPAND_PROB = 0.5
EXPAND_MAX_RATIO = 4.0
MEAN_RGB = SEED_MEAN_RGB
# Random sample crop (paper sec. 2.2): keep the whole image, or sample a patch whose IoU
# with some object is at least 0.1, 0.3, 0.5, 0.7 or 0.9 (the SSD authors' Caffe
# SatisfySampleConstraint, also torchvision's RandomIoUCrop), or any patch (0.0).
# ssd.pytorch leaves out 0.5; the paper lists it.
CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)
CROP_SIDE_RANGE = (0.3, 1.0)      # each side, of the image's (seed code base; Caffe's scale)
CROP_ASPECT_RANGE = (0.5, 2.0)    # patch height / width (paper: aspect ratio 1/2 to 2)
CROP_TRIALS = 50                  # patches tried per chosen option (seed code base)
MIRROR_PROB = 0.5


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] RGB in 0..255 -> HSV: hue in degrees [0, 360), saturation 0..1, value 0..255."""
    r, g, b = np.moveaxis(rgb, -1, 0).astype(np.float32)    # contiguous planes: faster
    v = np.maximum(np.maximum(r, g), b)
    chroma = v - np.minimum(np.minimum(r, g), b)
    safe = np.where(chroma > 0, chroma, 1)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, (b - r) / safe + 2,
                                                  (r - g) / safe + 4))
    h = np.where(chroma > 0, h * 60 % 360, 0)
    s = chroma / np.where(v > 0, v, 1)
    return np.stack([h, s, v], -1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = np.moveaxis(hsv, -1, 0)
    channels = []
    for n in (5, 3, 1):                                    # R, G, B
        k = (n + h / 60) % 6
        channels.append(v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.stack(channels, -1)


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast (before or after the HSV steps, at random), saturation, hue and
    a random channel order, each with probability 1/2; pixels clipped to 0..255."""
    image = image.astype(np.float32, copy=True)

    def contrast(x):
        return x * rng.uniform(*CONTRAST_RANGE) if rng.random() < 0.5 else x

    if rng.random() < 0.5:
        image += rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA)
    contrast_first = rng.random() < 0.5
    if contrast_first:
        image = contrast(image)
    hsv = _rgb_to_hsv(np.clip(image, 0, 255))
    if rng.random() < 0.5:
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*SATURATION_RANGE), 0, 1)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-HUE_DELTA, HUE_DELTA)) % 360
    image = _hsv_to_rgb(hsv)
    if not contrast_first:
        image = contrast(image)
    if rng.random() < 0.5:
        image = image[..., rng.permutation(3)]
    return np.clip(image, 0, 255)


def expand(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
           fill=MEAN_RGB) -> tuple[np.ndarray, np.ndarray]:
    """Zoom out: with probability 1/2, the image at a random place on a canvas filled with
    ``fill``, each side ``ratio`` times the image's (ratio uniform in [1, 4])."""
    if rng.random() >= EXPAND_PROB:
        return image, boxes
    H, W, _ = image.shape
    ratio = rng.uniform(1, EXPAND_MAX_RATIO)
    left = int(rng.uniform(0, W * ratio - W))
    top = int(rng.uniform(0, H * ratio - H))
    canvas = np.empty((int(H * ratio), int(W * ratio), 3), np.float32)
    canvas[:] = fill
    canvas[top:top + H, left:left + W] = image
    return canvas, boxes + np.array([left, top, left, top], np.float32)


def _iou(boxes: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """IoU of boxes [n, 4] with patches [T, 4], all xyxy -> [T, n]."""
    lt = np.maximum(boxes[None, :, :2], patches[:, None, :2])
    rb = np.minimum(boxes[None, :, 2:], patches[:, None, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    patch_area = (patches[:, 2] - patches[:, 0]) * (patches[:, 3] - patches[:, 1])
    return inter / (area[None] + patch_area[:, None] - inter)


def sample_crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                rng: np.random.Generator):
    """The paper's random sample crop. Returns (image, boxes, labels, patch, min_iou).

    An option is drawn from ``CROP_MIN_IOUS``: None keeps the image (patch None);
    otherwise ``CROP_TRIALS`` patches are drawn (each side 0.3 to 1 of the image's,
    integer pixel corners) and the first one is taken whose height / width is within
    1/2 to 2, that overlaps some object by IoU >= min_iou and that holds at least one
    box centre; if none does, another option is drawn. The boxes whose centre lies
    strictly inside the patch are kept, clipped to it and shifted into its coordinates.
    An image without objects takes only the whole-image or the any-patch option.
    """
    H, W, _ = image.shape
    options = CROP_MIN_IOUS if len(boxes) else (None, 0.0)
    while True:
        min_iou = options[int(rng.integers(len(options)))]
        if min_iou is None:
            return image, boxes, labels, None, None
        w = rng.uniform(*CROP_SIDE_RANGE, CROP_TRIALS) * W                    # [T]
        h = rng.uniform(*CROP_SIDE_RANGE, CROP_TRIALS) * H
        left = rng.uniform(0, 1, CROP_TRIALS) * (W - w)
        top = rng.uniform(0, 1, CROP_TRIALS) * (H - h)
        patches = np.floor(np.stack([left, top, left + w, top + h], 1)).astype(np.float32)
        ok = ((h / w >= CROP_ASPECT_RANGE[0]) & (h / w <= CROP_ASPECT_RANGE[1])
              & (patches[:, 2] > patches[:, 0]) & (patches[:, 3] > patches[:, 1]))
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2                          # [n, 2]
        inside = ((centres[None] > patches[:, None, :2])
                  & (centres[None] < patches[:, None, 2:])).all(2)           # [T, n]
        if len(boxes):
            ok &= (_iou(boxes, patches).max(1) >= min_iou) & inside.any(1)
        if ok.any():
            t = int(ok.argmax())
            keep = inside[t]
            return _crop_to(image, boxes[keep], labels[keep], patches[t]) + (patches[t],
                                                                             min_iou)


def _crop_to(image, boxes, labels, patch):
    x1, y1, x2, y2 = (int(v) for v in patch)
    clipped = np.concatenate([np.maximum(boxes[:, :2], patch[:2]),
                              np.minimum(boxes[:, 2:], patch[2:])], 1)
    return image[y1:y2, x1:x2], clipped - np.array([x1, y1, x1, y1], np.float32), labels


def mirror(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator):
    """Horizontal flip with probability 1/2."""
    if rng.random() >= MIRROR_PROB:
        return image, boxes
    W = image.shape[1]
    return image[:, ::-1], np.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0],
                                     boxes[:, 3]], 1)


def _to_pixels(image: np.ndarray, targets: np.ndarray):
    H, W = image.shape[:2]
    scale = np.array([W, H, W, H], np.float32)
    return targets[:, :4] * scale, targets[:, 4].copy()


def _to_targets(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    H, W = image.shape[:2]
    boxes = boxes / np.array([W, H, W, H], np.float32)
    return np.concatenate([boxes, labels[:, None]], 1).astype(np.float32).reshape(-1, 5)


class SSDAugmentation:
    """The SSD paper's training augmentation: photometric distortion, expand, random
    sample crop, mirror (the resize to the input size is ``preprocess``'s).

    ``augment(image, targets, rng) -> (image, targets)``: image HWC RGB (uint8 or float,
    0..255), targets float32 [n, 5] (x1, y1, x2, y2, label) normalised to the image;
    returns a float32 image and targets normalised to it. ``mean`` (RGB) fills the
    canvas of the zoom-out: the network's pixel mean, which it sees as zero.
    """

    def __init__(self, mean=MEAN_RGB):
        self.mean = tuple(mean)

    def __call__(self, image: np.ndarray, targets: np.ndarray, rng: np.random.Generator):
        boxes, labels = _to_pixels(image, targets)
        image = photometric_distort(image, rng)
        image, boxes = expand(image, boxes, rng, self.mean)
        image, boxes, labels, _, _ = sample_crop(image, boxes, labels, rng)
        image, boxes = mirror(image, boxes, rng)
        return np.ascontiguousarray(image), _to_targets(image, boxes, labels)


class SimpleAugmentation:
    """The lighter augmentation ssdonnx trained with before (kept to compare against):
    brightness and contrast jitter, horizontal flip, and with probability 1/2 a crop of
    0.6 to 1 of each side that is skipped unless it keeps every box centre."""

    def __init__(self, mean=MEAN_RGB):
        self.mean = tuple(mean)          # unused: nothing is filled

    def __call__(self, image: np.ndarray, targets: np.ndarray, rng: np.random.Generator):
        x = image.astype(np.float32)
        x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean() + rng.uniform(-30, 30)
        image = x.clip(0, 255)
        boxes, labels = _to_pixels(image, targets)
        image, boxes = mirror(image, boxes, rng)
        if rng.random() < 0.5:
            H, W = image.shape[:2]
            scale = rng.uniform(0.6, 1.0)
            w, h = int(W * scale), int(H * scale)
            x0, y0 = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
            patch = np.array([x0, y0, x0 + w, y0 + h], np.float32)
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            if ((centres >= patch[:2]) & (centres < patch[2:])).all():
                image, boxes, labels = _crop_to(image, boxes, labels, patch)
        return np.ascontiguousarray(image), _to_targets(image, boxes, labels)


AUGMENTATIONS = {"ssd": SSDAugmentation, "simple": SimpleAugmentation}
