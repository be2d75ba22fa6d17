"""Picture files: which to read, and reading them as every command does.

One reader for ``detect``, ``evaluate``, training data and int8 calibration, so that a
picture means the same everywhere: the EXIF orientation applied (a phone photo stored
sideways is seen upright), transparency composited on white, 16-bit pictures scaled to
8 bits, and files that would mislead or exhaust the reader refused by name.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .errors import DataError

# Pictures larger than this (pixels) are refused before they are decoded: Pillow's own
# decompression-bomb warning limit (about 89 million pixels, 9459 x 9459), which every
# camera picture stays under.
MAX_PICTURE_PIXELS = 89_478_485
# 16-bit integer modes: scaled to 8 bits by value / 257 (65535 -> 255).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class TruncatedPictureWarning(UserWarning):
    """A picture file that ends early, read as far as Pillow could decode it."""


def readable_suffixes() -> set[str]:
    """File name suffixes of every format this Pillow can open (.jpg, .png, .webp, .bmp,
    .tif, ...)."""
    from PIL import Image

    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items()
            if fmt in Image.OPEN}


def collect(paths, skip: Path | None = None) -> list[tuple[Path, Path]]:
    """The pictures named by ``paths`` (files, or folders searched recursively for the
    suffixes Pillow reads), each once, as (file, name relative to its folder argument).

    ``skip``: a folder whose files are left out of folder searches (the output folder,
    when it lies inside an input folder, so that earlier results are not read as input).
    Raises DataError for a path that does not exist.
    """
    suffixes = readable_suffixes()
    skip = skip.resolve() if skip is not None else None
    found, seen = [], set()
    for p in map(Path, paths):
        if p.is_dir():
            inside = skip is not None and skip != p.resolve() and \
                skip.is_relative_to(p.resolve())
            items = [(f, f.relative_to(p)) for f in sorted(p.rglob("*"))
                     if f.is_file() and f.suffix.lower() in suffixes
                     and not (inside and f.resolve().is_relative_to(skip))]
        elif p.is_file():
            items = [(p, Path(p.name))]
        else:
            raise DataError(f"{p}: no such file or folder")
        for f, rel in items:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                found.append((f, rel))
    return found


def collect_pictures(folder, limit: int | None = None) -> list[Path]:
    """The first ``limit`` pictures (sorted by path) of a folder, searched recursively
    for every format Pillow reads, or of a VOC-layout data set's JPEGImages/."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    voc = folder / "JPEGImages"
    files = sorted(f for f, _ in collect([voc if voc.is_dir() else folder]))
    files = files[:limit] if limit else files
    if not files:
        raise DataError(f"{folder} holds no pictures (of a format Pillow reads)")
    return files


def _to_8bit(image, path):
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and image.format == "PNG"):
        # PNG's only deeper grey is 16-bit, which some Pillow versions open as "I".
        array = np.asarray(image, dtype=np.float64) / 257
        return array.clip(0, 255).round().astype(np.uint8)
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise DataError(f"{path}: a {kind} picture has no defined 0..255 range; save it "
                        "with 8 or 16 bits per channel")
    return None


def read_picture(path):
    """The picture at ``path`` as a PIL RGB image, as ssdonnx's commands see it.

    The EXIF orientation is applied; transparency is composited on white; 16-bit grey
    is scaled to 8 bits. A file that ends early (a truncated JPEG, say) is read as far as
    Pillow can decode it, the rest filled grey, as viewers show it, with a
    ``TruncatedPictureWarning``. Raises DataError naming the file for a file Pillow
    cannot read, a picture over ``MAX_PICTURE_PIXELS`` (checked before decoding), a
    32-bit or floating-point picture, or a size of 0.
    """
    try:
        return _read_picture(Path(path), truncated=False)
    except _Truncated:
        image = _read_picture(Path(path), truncated=True)
        warnings.warn(TruncatedPictureWarning(
            f"{path}: the file ends early (truncated); read as far as it goes, the rest "
            "grey"), stacklevel=2)
        return image


class _Truncated(Exception):
    pass


def _read_picture(path: Path, truncated: bool):
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    from .transforms import to_rgb

    try:
        with Image.open(path) as image:
            w, h = image.size
            if w * h > MAX_PICTURE_PIXELS:
                raise DataError(f"{path}: {w} x {h} pixels, more than ssdonnx reads "
                                f"({MAX_PICTURE_PIXELS:,}); a decompression bomb, or a "
                                "picture to scale down first")
            if w == 0 or h == 0:
                raise DataError(f"{path}: the picture is {w} x {h} pixels")
            # Pillow's switch is global: set for this load only.
            before, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, truncated
            try:
                image.load()
            finally:
                ImageFile.LOAD_TRUNCATED_IMAGES = before
            image = ImageOps.exif_transpose(image)
            eight = _to_8bit(image, path)
            if eight is not None:
                return Image.fromarray(eight).convert("RGB")
            return to_rgb(image)
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(f"{path}: more pixels than ssdonnx reads ({MAX_PICTURE_PIXELS:,}); a "
                        "decompression bomb, or a picture to scale down first") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not truncated and "truncated" in first:
            raise _Truncated() from None
        raise DataError(f"{path}: not a readable picture ({first})") from None


def picture_array(path) -> np.ndarray:
    """``read_picture`` as an RGB array, HWC uint8."""
    return np.asarray(read_picture(path))


def load_batch(files, cfg) -> np.ndarray:
    """Pictures pre-processed for the network of ``cfg``: float32 [N, 3, S, S]. Raises
    DataError naming every picture that cannot be read."""
    from .transforms import preprocess_for

    arrays, failed = [], []
    for f in files:
        try:
            arrays.append(preprocess_for(read_picture(f), cfg).numpy())
        except DataError as exc:
            failed.append(str(exc))
    if failed:
        raise DataError(f"{len(failed)} of {len(files)} pictures cannot be read: "
                        f"{'; '.join(failed[:3])}{'; ...' if len(failed) > 3 else ''}")
    return np.stack(arrays)
