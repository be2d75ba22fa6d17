"""Pre-processing: the seed's inference transform."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import SEED_MEAN_RGB
from .errors import InputError, InputTypeError


def to_rgb(image):
    """A PIL image in RGB; transparent areas (RGBA, LA, or a palette with transparency)
    composited on white, as a viewer shows them, rather than dropped to the colour
    stored under them (often black)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def preprocess(image, size: int | None = 300, bgr: bool = False,
               mean=SEED_MEAN_RGB, std=(1.0, 1.0, 1.0)) -> Tensor:
    """An image -> Tensor[3, size, size] float32, as the seed feeds its network.

    The seed reads BGR images (OpenCV), resizes them bilinearly to the input size,
    subtracts the BGR mean (104, 117, 123) and then reorders the channels with
    ``[:, :, (2, 1, 0)]``; so the network sees R-123, G-117, B-104. This does the same;
    ``mean`` and ``std`` (RGB) are other networks' (``preprocess_for``).

    image: a PIL image (any mode; converted to RGB, transparency on white) or a NumPy
    array HWC (or HW for grey) of uint8 or float values in 0..255, RGB unless ``bgr=True``
    (OpenCV arrays); a fourth channel is alpha (255 opaque), composited on white.
    size: input side; None keeps the image's size.
    """
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise InputError(f"image: expected an HWC array with 3 channels, got shape "
                             f"{list(array.shape)}")
        if not np.issubdtype(array.dtype, np.number):
            raise InputTypeError(f"image: expected numeric pixels, got {array.dtype}")
        if array.shape[2] == 4:
            alpha = array[..., 3:].astype(np.float32) / 255
            array = array[..., :3] * alpha + 255 * (1 - alpha)
        if bgr:
            array = array[..., ::-1]
    elif hasattr(image, "convert"):
        array = np.asarray(to_rgb(image))
    else:
        raise InputTypeError(f"image: expected a PIL image or a NumPy array, got "
                             f"{type(image).__name__}")
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)
    if size is not None and tuple(x.shape[1:]) != (size, size):
        # Bilinear with half-pixel centres and no antialiasing: OpenCV's INTER_LINEAR.
        x = F.interpolate(x[None], size=(size, size), mode="bilinear",
                          align_corners=False, antialias=False)[0]
    x = x - torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    if tuple(std) != (1.0, 1.0, 1.0):
        x = x / torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x


def preprocess_for(image, cfg) -> Tensor:
    """``preprocess`` with the input size, pixel mean and std of ``cfg``."""
    return preprocess(image, cfg.input_size, mean=cfg.pixel_mean, std=cfg.pixel_std)
