"""Picture files for ``ssdonnx detect``: which to read, and unique names for the results."""

from __future__ import annotations

from pathlib import Path


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
    Raises FileNotFoundError for a path that does not exist.
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
            raise FileNotFoundError(f"{p}: no such file or folder")
        for f, rel in items:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                found.append((f, rel))
    return found


def result_names(pictures: list[tuple[Path, Path]]) -> list[Path]:
    """A distinct .png name per picture, relative to the output folder: its relative
    name with the suffix .png (``a.jpg`` -> ``a.png``); where pictures of different
    formats would share one (``a.jpg`` and ``a.png``), each keeps its format in the name
    (``a_jpg.png``, ``a_png.png``); names still equal (one name in several folders) are
    numbered (``b.png``, ``b-2.png``)."""
    plain = [rel.with_suffix(".png") for _, rel in pictures]
    formats: dict[Path, set[str]] = {}
    for (_, rel), name in zip(pictures, plain):
        formats.setdefault(name, set()).add(rel.suffix.lower())
    names = [rel.with_name(f"{rel.stem}_{rel.suffix.lstrip('.').lower()}.png")
             if len(formats[name]) > 1 else name for (_, rel), name in zip(pictures, plain)]
    unique: list[Path | None] = [None] * len(names)
    used = set()
    for i, name in enumerate(names):          # first comers keep their names
        if name not in used:
            used.add(name)
            unique[i] = name
    for i, name in enumerate(names):          # the others get the first free number
        if unique[i] is None:
            k = 2
            while name.with_name(f"{name.stem}-{k}.png") in used:
                k += 1
            unique[i] = name.with_name(f"{name.stem}-{k}.png")
            used.add(unique[i])
    return unique
