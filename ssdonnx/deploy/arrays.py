"""Loss inputs from an ``.npz`` file, for ``ssdonnx loss``: checked from each array's
``.npy`` header (name, dtype, shape, size) before any array is read, so that a small file
that declares huge arrays (a zip bomb) is refused instead of filling memory."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..config import SSDConfig
from ..errors import DataError

# Every array of an npz together may declare at most this many bytes.
MAX_NPZ_BYTES = 2 << 30
# Per-image targets: targets_0 ... at most this many.
MAX_IMAGES = 4096


def npy_headers(path: Path) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """name -> (dtype, shape) of each array in an npz, read from the headers alone."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({type(exc).__name__})") \
            from None
    headers = {}
    with archive:
        for member in archive.infolist():
            if not member.filename.endswith(".npy"):
                raise DataError(f"{path}: {member.filename!r} is not an .npy array")
            try:
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(f)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError,
                    RuntimeError) as exc:
                raise DataError(f"{path}: {member.filename}: not an .npy array "
                                f"({str(exc)[:120]})") from None
            headers[member.filename.removesuffix(".npy")] = (dtype, tuple(shape))
    return headers


def _declared_bytes(headers) -> int:
    return sum(int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
               for dtype, shape in headers.values())


def load_loss_inputs(path, cfg: SSDConfig):
    """loc [B, P, 4], conf [B, P, C] and targets [B, G, 5] (or per image ``targets_0``,
    ``targets_1``, ... of shape [n_i, 5]) from an npz, as float32 tensors, targets padded.
    Raises DataError naming the file and the array for anything else."""
    import torch

    from .. import checks
    from ..matching import pad_targets

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    headers = npy_headers(path)
    keys = set(headers)
    per_image = sorted((k for k in keys if k.startswith("targets_")),
                       key=lambda k: int(k.split("_")[1]) if k.split("_")[1].isdigit() else -1)
    missing = sorted({"loc", "conf"} - keys)
    if "targets" not in keys and not per_image:
        missing.append("targets (or targets_0, targets_1, ...)")
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; found {sorted(keys)[:10]}")
    if len(per_image) > MAX_IMAGES:
        raise DataError(f"{path}: {len(per_image)} per-image targets; at most {MAX_IMAGES}")
    for key, (dtype, _) in headers.items():
        if not np.issubdtype(dtype, np.floating):
            raise DataError(f"{path}: {key}: expected floating-point values, got {dtype}")
    size = _declared_bytes(headers)
    if size > MAX_NPZ_BYTES:
        raise DataError(f"{path} declares {size / 2**30:.1f} GiB of arrays; ssdonnx loss "
                        f"reads at most {MAX_NPZ_BYTES / 2**30:.0f} GiB")
    P, C = cfg.num_priors, cfg.num_classes
    B = headers["loc"][1][0] if len(headers["loc"][1]) == 3 else None
    expected = {"loc": f"[B, {P}, 4]", "conf": f"[B, {P}, {C}]"}
    for key, want in (("loc", (B, P, 4)), ("conf", (B, P, C))):
        if headers[key][1] != want:
            raise DataError(f"{path}: {key} has shape {list(headers[key][1])}; the graph "
                            f"({cfg.name}) takes {expected[key]}")
    with np.load(path, allow_pickle=False) as data:
        def floats(key):
            return torch.from_numpy(np.asarray(data[key], dtype=np.float32))

        loc, conf = floats("loc"), floats("conf")
        if "targets" in keys:
            targets = floats("targets")
        else:
            wanted = [f"targets_{i}" for i in range(len(per_image))]
            if per_image != wanted:
                raise DataError(f"{path}: per-image targets must be {wanted[:3]}..., got "
                                f"{per_image[:5]}")
            arrays = [floats(k).reshape(-1, 5) if headers[k][1] and
                      int(np.prod(headers[k][1])) == 0 else floats(k) for k in per_image]
            try:
                targets = pad_targets(arrays)
            except ValueError as exc:
                raise DataError(f"{path}: {exc}") from None
    try:
        checks.check_targets(targets, C)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    if targets.shape[0] != loc.shape[0]:
        raise DataError(f"{path}: targets hold {targets.shape[0]} images, loc {loc.shape[0]}")
    try:
        checks.require_finite(loc, "loc")
        checks.require_finite(conf, "conf", "logits")
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None
    return loc, conf, targets
