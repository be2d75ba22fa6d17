"""``ssdonnx detect`` as a library call: find objects in picture files with a ``Detector``
and write one drawn picture per input plus ``detections.json`` into a folder.

What it writes, it writes whole (temporary file, then rename: a link into an input is
replaced, never written through), and it replaces nothing it was not told to: an input
never; a file of the same name already in the folder only with ``force``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..deploy import files
from ..errors import DataError, OutputError
from ..pictures import collect, read_picture
from .draw import draw_detections

RESULTS_JSON = "detections.json"


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
    used = {Path(RESULTS_JSON)}
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


@dataclass
class Annotated:
    """What ``annotate`` did: one entry per picture written, the pictures skipped."""
    out: Path
    results: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    detections: int = 0
    seconds: float = 0.0
    pictures: int = 0
    # Pictures on which nothing reached the score threshold, and the best score seen on
    # them (None where the detector gave nothing at all).
    empty: int = 0
    best_of_empty: float | None = None


@dataclass
class Plan:
    """The pictures of a run and the names of their results in ``out``, checked before
    any work (nothing to overwrite, the folder writable)."""
    out: Path
    pictures: list[tuple[Path, Path]]
    names: list[Path]

    def __len__(self) -> int:
        return len(self.pictures)


def plan(inputs, out, force: bool = False) -> Plan:
    """What ``annotate`` will read and write. Refuses results that would replace an
    input, and (without ``force``) files of the same names already in ``out``."""
    out = Path(out)
    pictures = collect(inputs, skip=out)
    if not pictures:
        raise DataError(f"no pictures (of a format Pillow reads) in {', '.join(map(str, inputs))}")
    names = result_names(pictures)
    sources = {f.resolve() for f, _ in pictures}
    clobbered = [str(out / n) for n in names if (out / n).resolve() in sources]
    if clobbered:
        raise OutputError(f"--out {out}: the results would overwrite input pictures "
                          f"({', '.join(clobbered[:3])}{', ...' if len(clobbered) > 3 else ''}"
                          "); choose another folder")
    existing = [str(out / n) for n in [*names, Path(RESULTS_JSON)] if (out / n).exists()]
    if existing and not force:
        raise OutputError(f"--out {out} already holds {len(existing)} of the files this run "
                          f"writes ({', '.join(existing[:3])}"
                          f"{', ...' if len(existing) > 3 else ''}); pass --force to "
                          "replace them, or choose another folder")
    files.check_writable(out)
    return Plan(out, pictures, names)


def annotate(detector, inputs, out=None, force: bool = False, batch: int = 8,
             progress=None) -> Annotated:
    """Detect objects in the pictures of ``inputs`` (files, or folders searched for
    every format Pillow reads; or a ``Plan``) and write the drawings and
    ``detections.json`` to ``out``. Pictures that cannot be read are named in
    ``failed`` and skipped. ``progress(n)`` after each batch."""
    work_plan = inputs if isinstance(inputs, Plan) else plan(inputs, out, force)
    out = work_plan.out
    report = Annotated(out, pictures=len(work_plan))
    t0 = time.perf_counter()
    work = list(zip(work_plan.pictures, work_plan.names))
    for start in range(0, len(work), batch):
        chunk, loaded = work[start:start + batch], []
        for (f, _), name in chunk:
            try:
                loaded.append((f, name, read_picture(f)))
            except DataError as exc:
                report.failed.append(str(exc))
        if loaded:
            found = detector.detect([im for _, _, im in loaded])
            for (f, name, im), dets in zip(loaded, found):
                rows = dets.to_list()
                report.detections += len(rows)
                best = None if dets.best_score is None else round(dets.best_score, 4)
                report.results.append({"image": str(f), "picture": str(name),
                                       "width": dets.width, "height": dets.height,
                                       "best_score": best, "detections": rows})
                if not rows:
                    report.empty += 1
                    if best is not None and (report.best_of_empty is None
                                             or best > report.best_of_empty):
                        report.best_of_empty = best
                files.make_folder((out / name).parent)
                with files.atomic_output(out / name, durable=False) as tmp:
                    draw_detections(im, rows).save(tmp, format="PNG")
        if progress:
            progress(len(chunk))
    report.seconds = time.perf_counter() - t0
    files.write_text(out / RESULTS_JSON, json.dumps(report.results, indent=2,
                                                     allow_nan=False))
    return report
