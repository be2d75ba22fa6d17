"""Input validation for the Python API.

Every check raises ``ValueError`` (``TypeError`` for dtypes) with a message that names
the argument and, for per-row problems, the image index and the row. Checks are skipped
while ``torch.export`` / ``torch.onnx.export`` traces, so they never enter a graph; the
exported graphs handle rows they cannot reject as the README's "Input contract" says.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import InputError, InputTypeError

# Box coordinates may stray this far outside [0, 1] (rounding of pixel annotations,
# for example a 1-based VOC xmax divided by the width); they are used as given.
COORD_TOLERANCE = 1e-2


def is_exporting() -> bool:
    return bool(torch.compiler.is_exporting() or torch.jit.is_tracing()
                or torch.onnx.is_in_onnx_export())


def require_tensor(x, name: str) -> None:
    if not isinstance(x, Tensor):
        raise InputTypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")


def require_float(x: Tensor, name: str) -> None:
    require_tensor(x, name)
    if not x.is_floating_point():
        raise InputTypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")


def require_shape(x: Tensor, name: str, shape: str, rank: int, **sizes: int) -> None:
    """Check rank and named sizes; ``shape`` is the contract, such as '[B, P, 4]'."""
    if x.dim() != rank:
        raise InputError(f"{name}: expected shape {shape}, got {list(x.shape)}")
    for axis, size in sizes.items():
        i = int(axis[1:])
        if x.shape[i] != size:
            raise InputError(
                f"{name}: expected shape {shape} with size {size} at dim {i}, "
                f"got {list(x.shape)}")


def require_finite(x: Tensor, name: str, what: str = "values") -> None:
    # Fast path: one read-only pass. A finite sum means every element is finite; an
    # infinite sum of finite values (overflow) falls through to the exact search.
    if x.numel() == 0 or torch.isfinite(x.sum(dtype=torch.float32)):
        return
    bad = ~torch.isfinite(x)
    if bad.any():
        where = [int(v) for v in bad.nonzero()[0]]
        raise InputError(f"{name}: non-finite {what} (NaN or inf) at index {where}")


def require_same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise InputError(f"tensors on different devices: {listed}")


def check_targets(targets: Tensor, num_classes: int | None = None,
                  name: str = "targets") -> None:
    """targets: Tensor[B, G, 5], rows (x1, y1, x2, y2, label); label -1 marks padding."""
    require_float(targets, name)
    require_shape(targets, name, "[B, G, 5]", 3, d2=5)
    if targets.numel() == 0:
        return
    t = targets.detach()
    labels = t[..., 4]
    real = labels != -1                                                   # [B, G]
    x1, y1, x2, y2 = t[..., 0], t[..., 1], t[..., 2], t[..., 3]
    # Fast path: one test of every condition below at once (a NaN anywhere fails it).
    top = num_classes - 1 if num_classes is not None else float("inf")
    ok = ((labels == -1) | ((labels == labels.round()) & (labels >= 0) & (labels < top)
                            & (x2 > x1) & (y2 > y1)
                            & (t[..., :4] >= -COORD_TOLERANCE).all(-1)
                            & (t[..., :4] <= 1 + COORD_TOLERANCE).all(-1))) \
        & torch.isfinite(t).all(-1)
    if bool(ok.all()):
        return
    problems = [
        (~torch.isfinite(t).all(-1), "non-finite value (NaN or inf)"),
        (real & (labels != labels.round()), "label is not a whole number"),
        (real & (labels < -1), "label below -1 (-1 marks padding)"),
    ]
    if num_classes is not None:
        problems.append((real & (labels >= num_classes - 1),
                         f"label >= {num_classes - 1} (labels are 0..{num_classes - 2}, "
                         f"background excluded, for {num_classes} classes)"))
    outside = ((t[..., :4] < -COORD_TOLERANCE) | (t[..., :4] > 1 + COORD_TOLERANCE)).any(-1)
    problems += [
        (real & ~(x2 > x1), "x2 <= x1"),
        (real & ~(y2 > y1), "y2 <= y1"),
        (real & outside, f"coordinate outside [0, 1] by more than {COORD_TOLERANCE}"),
    ]
    for bad, what in problems:
        if bad.any():
            b, g = (int(v) for v in bad.nonzero()[0])
            row = [round(float(v), 6) for v in t[b, g]]
            raise InputError(f"{name}: image {b}, row {g}: {what}: {row}")


def check_images(images: Tensor, size: int) -> None:
    """images: float [B, 3, size, size], finite: what a network takes."""
    require_float(images, "images")
    require_shape(images, "images", f"[B, 3, {size}, {size}]", 4, d1=3, d2=size, d3=size)
    require_finite(images.detach(), "images", "pixels")


def check_dbox(dbox: Tensor) -> None:
    """dbox: float [P, 4] (cx, cy, w, h), finite, w and h > 0 (a box of no size gives
    inf or NaN offsets)."""
    require_float(dbox, "dbox")
    require_shape(dbox, "dbox", "[P, 4]", 2, d1=4)
    require_finite(dbox, "dbox")
    if dbox.numel() and not bool((dbox[:, 2:] > 0).all()):
        i = int((dbox[:, 2:] <= 0).any(1).nonzero()[0])
        raise InputError(f"dbox: default box {i} has a width or height <= 0: "
                         f"{[round(float(v), 6) for v in dbox[i]]}")


def check_predictions(loc: Tensor, conf: Tensor, dbox: Tensor) -> None:
    """loc: [B, P, 4], conf: [B, P, C], dbox: [P, 4]; float, finite, one device."""
    require_float(loc, "loc")
    require_float(conf, "conf")
    check_dbox(dbox)
    P = dbox.shape[0]
    require_shape(loc, "loc", "[B, P, 4]", 3, d1=P, d2=4)
    require_shape(conf, "conf", "[B, P, C]", 3, d0=loc.shape[0], d1=P)
    if conf.shape[2] < 2:
        raise InputError(f"conf: expected C >= 2 classes (background + 1), got {conf.shape[2]}")
    require_same_device(loc=loc, conf=conf, dbox=dbox)
    require_finite(loc.detach(), "loc")
    require_finite(conf.detach(), "conf", "logits")


# Hyperparameters, checked where they are set.

def check_fraction(value, name: str, low: float = 0.0, high: float = 1.0,
                   low_open: bool = False) -> float:
    """A number in [low, high] (or (low, high] with ``low_open``); NaN is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not (low < value <= high if low_open else low <= value <= high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InputError(f"{name}: expected a number in {interval}, got {value!r}")
    return float(value)


def check_count(value, name: str, low: int = 1, high: int = 1_000_000) -> int:
    """A whole number in [low, high] (not a bool, not a float)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{name}: expected a whole number from {low} to {high}, "
                         f"got {value!r}")
    return value


def check_variances(variances) -> tuple[float, float]:
    """Encoding variances (centre, size): two positive finite numbers."""
    try:
        values = tuple(variances)
    except TypeError:
        values = ()
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                               or not 0 < v < float("inf") for v in values):
        raise InputError(f"variances: expected two positive numbers (centre, size), "
                         f"got {variances!r}")
    return float(values[0]), float(values[1])
