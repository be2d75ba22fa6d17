"""Detection data: Pascal VOC folders (the seed's format, and the ``images/`` +
``annotations/`` folders labelling tools such as LabelImg and CVAT write) and COCO JSON
files, read into one form.

A VOC folder holds pictures in ``JPEGImages/`` (or ``images/``; any format Pillow reads,
one picture per id), one XML per picture in ``Annotations/`` (or ``annotations/``, or,
found by their names when they hold XML files, ``annots/``, ``labels/`` or ``xml/``; or a
folder given as ``annotations``) and, optionally, lists of ids in
``ImageSets/Main/<set>.txt``. A COCO file
(``instances_*.json``) names its pictures, found in ``images`` (default: the folder
``images/`` beside the file, or the file's own folder). Image sets: ``train``,
``train,val`` (several lists joined), or ``all`` (every annotated picture, no list
needed). ``ssdonnx data split`` writes ``train``, ``val`` and ``trainval`` lists.

Every annotation is read and checked when a set is opened, and each problem names its
file; ``VOCDataset`` also decodes every picture once and checks its size against its
annotation, and lists every bad one in one message (or, with ``skip_bad``, leaves them
out and names them): a data set fails before training starts, not in the middle of an
epoch. Targets
are ``[n, 5]`` rows (x1, y1, x2, y2, label) normalised to [0, 1]: VOC's 1-based pixels as
the seed does, (pixel - 1) / size; COCO's 0-based ones as pixel / size.
"""

from __future__ import annotations

import json
import math
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..checks import COORD_TOLERANCE
from ..config import SEED_MEAN_RGB
from ..errors import DataError, InputError, OutputError
from ..matching import pad_targets
from ..pictures import TruncatedPictureWarning, picture_array, readable_suffixes
from ..transforms import preprocess

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
PICTURE_FOLDERS = ("JPEGImages", "images")
ANNOTATION_FOLDERS = ("Annotations", "annotations")
# Other names labelling tools and published sets give the XML folder: taken when they
# hold XML files, and said.
OTHER_ANNOTATION_FOLDERS = ("annots", "labels", "xml")
LISTS = Path("ImageSets") / "Main"
ALL = "all"
# An annotation larger than this is not a picture's annotation (bytes).
MAX_ANNOTATION_BYTES = 10 << 20


class AnnotationError(DataError):
    """An annotation file that cannot be read, or that does not fit its picture."""


@dataclass(frozen=True)
class Record:
    """One annotated picture: targets float32 [n, 5] normalised (labels 0..C-2),
    difficult bool [n] (VOC's flag; COCO's crowd regions), and the (width, height) the
    annotation is for. ``source`` names the annotation for messages."""
    id: str
    picture: Path
    targets: np.ndarray
    difficult: np.ndarray
    size: tuple[int, int]
    source: str


# --- VOC -------------------------------------------------------------------------------

def _text(node, path, what) -> str:
    if node is None or node.text is None or not node.text.strip():
        raise AnnotationError(f"{path}: {what} is missing")
    return node.text.strip()


def _number(node, path, what) -> float:
    text = _text(node, path, what)
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{path}: {what} is {text[:20]!r}, not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{path}: {what} is {text[:20]!r}")
    return value


def voc_objects(path) -> tuple[tuple[int, int], list[tuple[str, tuple, bool]]]:
    """One VOC XML file -> ((width, height), [(name, (xmin, ymin, xmax, ymax) 1-based
    pixels, difficult)]), checked: positive size, a name and a numeric box per object,
    ``difficult`` 0 or 1."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_ANNOTATION_BYTES:
            raise AnnotationError(f"{path}: {path.stat().st_size} bytes, not an annotation")
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise AnnotationError(f"{path}: not a VOC annotation ({exc})") from None
    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{path}: not a VOC annotation (no <size>)")
    width, height = (_number(size.find(k), path, f"size/{k}") for k in ("width", "height"))
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise AnnotationError(f"{path}: the picture size is {width:g} x {height:g}; expected "
                              "positive whole numbers of pixels")
    objects = []
    for i, obj in enumerate(root.iter("object")):
        name = _text(obj.find("name"), path, f"object {i}: <name>")
        flag = obj.find("difficult")
        difficult = False
        if flag is not None and flag.text is not None:
            if flag.text.strip() not in ("0", "1"):
                raise AnnotationError(f"{path}: object {i} ({name}): difficult is "
                                      f"{flag.text.strip()[:20]!r}; expected 0 or 1")
            difficult = flag.text.strip() == "1"
        box = obj.find("bndbox")
        if box is None:
            raise AnnotationError(f"{path}: object {i} ({name}) has no <bndbox>")
        coords = tuple(_number(box.find(k), path, f"object {i} ({name}): bndbox/{k}")
                       for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append((name, coords, difficult))
    return (int(width), int(height)), objects


def _normalised(path, i, name, box, size, base: float) -> list[float]:
    """A pixel box as normalised (x1, y1, x2, y2), checked to lie in the picture."""
    W, H = size
    x1, y1, x2, y2 = (box[0] - base) / W, (box[1] - base) / H, (box[2] - base) / W, \
        (box[3] - base) / H
    if not (x2 > x1 and y2 > y1):
        raise AnnotationError(f"{path}: object {i} ({name}): the box {list(box)} is empty "
                              "(max <= min)")
    if min(x1, y1) < -COORD_TOLERANCE or max(x2, y2) > 1 + COORD_TOLERANCE:
        raise AnnotationError(f"{path}: object {i} ({name}): the box {list(box)} lies "
                              f"outside the {W} x {H} picture")
    return [x1, y1, x2, y2]


def parse_annotation(path, classes, keep_difficult: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One VOC XML file -> (targets float32 [n, 5] normalised, difficult bool [n],
    (width, height)). Difficult objects are dropped unless ``keep_difficult``."""
    size, objects = voc_objects(path)
    rows, flags = [], []
    for i, (name, box, difficult) in enumerate(objects):
        if name not in classes:
            raise AnnotationError(f"{path}: object {i} has class {name!r}, not one of "
                                  f"the {len(classes)} classes")
        # VOC pixels are 1-based; the seed subtracts 1 and divides by the size, after
        # truncating to whole pixels.
        pixels = tuple(float(int(v)) for v in box)
        normalised = _normalised(path, i, name, pixels, size, base=1.0)
        if difficult and not keep_difficult:
            continue
        rows.append(normalised + [classes.index(name)])
        flags.append(difficult)
    return (np.array(rows, dtype=np.float32).reshape(-1, 5), np.array(flags, dtype=bool),
            size)


def _folder(root: Path, names) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no {' or '.join(n + '/' for n in names)} folder; expected a "
                    "VOC-layout data set (or a COCO .json file)")


def annotation_folder(root, annotations=None) -> Path:
    """The folder of a VOC data set's XML files: ``annotations`` where given (relative to
    ``root`` or absolute), else ``Annotations/`` or ``annotations/``, else the first of
    ``annots/``, ``labels/``, ``xml/`` that holds XML files."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data set")
    if annotations is not None:
        folder = root / annotations
        if not folder.is_dir():
            raise DataError(f"{folder}: no such annotation folder")
        return folder
    for name in ANNOTATION_FOLDERS:
        if (root / name).is_dir():
            return root / name
    for name in OTHER_ANNOTATION_FOLDERS:
        if (root / name).is_dir() and any((root / name).glob("*.xml")):
            return root / name
    names = ANNOTATION_FOLDERS + OTHER_ANNOTATION_FOLDERS
    raise DataError(f"{root}: no {', '.join(n + '/' for n in names)} folder of XML files; "
                    "name yours with --annotations DIR (or give a COCO .json file)")


def annotation_note(root, annotations=None) -> str | None:
    """One line saying which annotation folder was taken, where it was not given and is
    not one of VOC's own names (None otherwise)."""
    folder = annotation_folder(root, annotations)
    if annotations is None and folder.name not in ANNOTATION_FOLDERS:
        return f"annotations: {folder} (found by its name; --annotations DIR names another)"
    return None


def _pictures_by_stem(folder: Path) -> dict[str, Path]:
    suffixes = readable_suffixes()
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in suffixes:
            if f.stem in found:
                raise DataError(f"{folder}: two pictures for one id: {found[f.stem].name} and "
                                f"{f.name}")
            found[f.stem] = f
    return found


def read_ids(root: Path, image_set: str) -> list[str] | None:
    """The ids of ``image_set`` (comma-joined names of lists in ImageSets/Main), or None
    for ``all``. Ids that would reach outside the data set are refused."""
    if image_set == ALL:
        return None
    ids: list[str] = []
    for name in image_set.split(","):
        list_file = root / LISTS / f"{name.strip()}.txt"
        if "/" in name or "\\" in name or not list_file.is_file():
            have = sorted(p.stem for p in (root / LISTS).glob("*.txt"))
            raise DataError(f"{list_file}: no such image set in {root} (it has "
                            f"{', '.join(have) or 'no lists'}; `--image-set all` takes every "
                            "annotated picture, `ssdonnx data split` writes lists)")
        for n, line in enumerate(list_file.read_text().splitlines(), 1):
            item = line.strip()
            if item and ("/" in item or "\\" in item or item in (".", "..")
                         or Path(item).is_absolute()):
                raise DataError(f"{list_file}, line {n}: {item[:60]!r} is not an id (ids name "
                                "files inside the data set, without folders)")
            if item:
                ids.append(item)
    return ids


def voc_classes(root, annotations=None) -> tuple[str, ...]:
    """The class names used in a VOC folder's annotations, sorted."""
    folder = annotation_folder(root, annotations)
    names = {name for xml in sorted(folder.glob("*.xml"))
             for name, _, _ in voc_objects(xml)[1]}
    return tuple(sorted(names))


def read_voc(root, image_set: str, classes, keep_difficult: bool = False,
             annotations=None) -> list[Record]:
    root = Path(root)
    annotations = annotation_folder(root, annotations)
    pictures = _pictures_by_stem(_folder(root, PICTURE_FOLDERS))
    ids = read_ids(root, image_set)
    if ids is None:
        ids = sorted(p.stem for p in annotations.glob("*.xml"))
    records = []
    for image_id in ids:
        xml = annotations / f"{image_id}.xml"
        if not xml.is_file():
            raise DataError(f"{xml}: no annotation for id {image_id!r} of image set "
                            f"{image_set!r}")
        if image_id not in pictures:
            raise DataError(f"{root}: no picture for id {image_id!r} in "
                            f"{pictures and next(iter(pictures.values())).parent or root}")
        targets, difficult, size = parse_annotation(xml, classes, keep_difficult)
        records.append(Record(image_id, pictures[image_id], targets, difficult, size,
                              str(xml)))
    return records


# --- COCO ------------------------------------------------------------------------------

def _coco_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AnnotationError(f"{path}: not a COCO annotation file "
                              f"({type(exc).__name__})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise AnnotationError(f"{path}: not a COCO annotation file (it needs lists "
                              "images, annotations and categories)")
    return data


def coco_classes(path) -> tuple[str, ...]:
    """A COCO file's category names, in the order of their ids."""
    data = _coco_json(Path(path))
    try:
        return tuple(str(c["name"]) for c in sorted(data["categories"], key=lambda c: c["id"]))
    except (KeyError, TypeError) as exc:
        raise AnnotationError(f"{path}: a category without id or name ({exc})") from None


def coco_images_folder(path: Path, images=None) -> Path:
    if images is not None:
        return Path(images)
    return path.parent / "images" if (path.parent / "images").is_dir() else path.parent


def read_coco(path, image_set: str, classes, images=None) -> list[Record]:
    """The pictures of a COCO file (``image_set`` lists their file names, in ImageSets/Main
    beside the file), boxes [x, y, w, h] in 0-based pixels; crowd regions are flagged
    difficult (they count neither way in evaluation, as in COCO's own)."""
    path = Path(path)
    data = _coco_json(path)
    folder = coco_images_folder(path, images)
    try:
        names = {c["id"]: str(c["name"]) for c in data["categories"]}
        pictures = {im["id"]: (str(im["file_name"]), int(im["width"]), int(im["height"]))
                    for im in data["images"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"{path}: an image or category without id, file_name, width "
                              f"or height ({exc})") from None
    wanted = read_ids(path.parent, image_set)
    by_name = {name: image_id for image_id, (name, _, _) in pictures.items()}
    if wanted is not None:
        missing = [w for w in wanted if w not in by_name]
        if missing:
            raise DataError(f"{path}: image set {image_set!r} names pictures it does not "
                            f"hold: {missing[:3]}")
        chosen = [by_name[w] for w in wanted]
    else:
        chosen = sorted(pictures, key=lambda i: pictures[i][0])
    boxes: dict = {i: [] for i in chosen}
    for n, ann in enumerate(data["annotations"]):
        try:
            image_id, cat, bbox = ann["image_id"], ann["category_id"], ann["bbox"]
            crowd = bool(ann.get("iscrowd", 0))
            x, y, w, h = (float(v) for v in bbox)
        except (KeyError, TypeError, ValueError):
            raise AnnotationError(f"{path}: annotation {n} needs image_id, category_id and "
                                  "bbox [x, y, w, h]") from None
        if image_id not in pictures or cat not in names:
            raise AnnotationError(f"{path}: annotation {n} names image {image_id!r} or "
                                  f"category {cat!r}, which the file does not hold")
        if image_id in boxes:
            boxes[image_id].append((n, names[cat], (x, y, x + w, y + h), crowd))
    records = []
    for image_id in chosen:
        file_name, W, H = pictures[image_id]
        picture = folder / file_name
        if Path(file_name).is_absolute() or \
                not picture.resolve().is_relative_to(folder.resolve()):
            raise DataError(f"{path}: image {image_id}: {file_name[:80]!r} reaches outside "
                            f"{folder}")
        if W <= 0 or H <= 0:
            raise AnnotationError(f"{path}: image {image_id} ({file_name}) is {W} x {H}")
        rows, flags = [], []
        for n, name, box, crowd in boxes[image_id]:
            if name not in classes:
                raise AnnotationError(f"{path}: annotation {n} has class {name!r}, not one "
                                      f"of the {len(classes)} classes")
            rows.append(_normalised(f"{path}: annotation {n}", n, name, box, (W, H), 0.0)
                        + [classes.index(name)])
            flags.append(crowd)
        if not picture.is_file():
            raise DataError(f"{path}: image {image_id}: no picture {picture}")
        records.append(Record(file_name, picture,
                              np.array(rows, dtype=np.float32).reshape(-1, 5),
                              np.array(flags, dtype=bool), (W, H),
                              f"{path} (image {image_id})"))
    return records


# --- one form for both -----------------------------------------------------------------

def all_ids(data, annotations=None) -> list[str]:
    """Every annotated picture's id: a VOC folder's annotations that have a picture, or
    a COCO file's picture names."""
    data = Path(data)
    if is_coco(data):
        try:
            return sorted(str(im["file_name"]) for im in _coco_json(data)["images"])
        except (KeyError, TypeError) as exc:
            raise AnnotationError(f"{data}: an image without file_name ({exc})") from None
    pictures = _pictures_by_stem(_folder(data, PICTURE_FOLDERS))
    return sorted(p.stem for p in annotation_folder(data, annotations).glob("*.xml")
                  if p.stem in pictures)


def natural_order(ids) -> list[str]:
    """``ids`` sorted with their runs of digits as numbers (``img-2`` before ``img-10``;
    ``00005`` before ``00010`` as in plain order)."""
    def key(i):
        return [(0, int(part), part) if part.isdigit() else (1, 0, part)
                for part in re.split(r"(\d+)", i) if part]
    return sorted(ids, key=key)


def write_split(data, val: float = 0.2, seed: int = 0, force: bool = False,
                every: int | None = None, annotations=None) -> dict[str, list[str]]:
    """A fixed split of every annotated picture into ``train`` and ``val`` lists (and
    ``trainval``), written to ImageSets/Main/ of the data set (beside a COCO file), for
    any naming of the ids. ``val``: the share held out, drawn with ``seed``; or ``every``
    N: every N-th picture held out, in the ids' natural order (their numbers as numbers).
    Existing lists are replaced only with ``force``."""
    from ..deploy.files import make_folder, write_text

    if every is None and not 0 < val < 1:
        raise InputError(f"val: expected a share between 0 and 1, got {val}")
    if every is not None and not (isinstance(every, int) and every >= 2):
        raise InputError(f"every: expected a whole number of at least 2, got {every!r}")
    data = Path(data)
    ids = all_ids(data, annotations)
    if every is not None:
        ids = natural_order(ids)
    if len(ids) < 2:
        raise DataError(f"{data}: {len(ids)} annotated pictures; a split needs at least 2")
    if every is not None and len(ids) < every:
        raise DataError(f"{data}: {len(ids)} annotated pictures; every {every}th held out "
                        "leaves none for val")
    folder = (data.parent if is_coco(data) else data) / LISTS
    lists = {name: folder / f"{name}.txt" for name in ("train", "val", "trainval")}
    existing = [str(p) for p in lists.values() if p.exists()]
    if existing and not force:
        raise OutputError(f"{', '.join(existing)} exist; pass --force (force=True) to "
                          "replace them")
    if every is not None:
        held = {i for n, i in enumerate(ids, 1) if n % every == 0}
    else:
        order = np.random.default_rng(seed).permutation(len(ids))
        n_val = min(len(ids) - 1, max(1, round(val * len(ids))))
        held = {ids[i] for i in order[:n_val]}
    split = {"train": [i for i in ids if i not in held], "val": [i for i in ids if i in held],
             "trainval": ids}
    make_folder(folder)
    for name, path in lists.items():
        write_text(path, "".join(f"{i}\n" for i in split[name]))
    return split


def is_coco(data) -> bool:
    return Path(data).suffix.lower() == ".json"


def dataset_classes(data, annotations=None) -> tuple[str, ...]:
    """The class names a data set uses: a COCO file's categories in id order, or the
    names in a VOC folder's annotations, sorted."""
    return coco_classes(data) if is_coco(data) else voc_classes(data, annotations)


def read_records(data, image_set: str, classes, keep_difficult: bool = False,
                 images=None, annotations=None) -> list[Record]:
    """Every annotated picture of ``image_set`` in ``data`` (a VOC folder or a COCO
    file), checked; an empty set is refused."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: no such data set")
    if is_coco(data):
        records = read_coco(data, image_set, tuple(classes), images)
    else:
        records = read_voc(data, image_set, tuple(classes), keep_difficult, annotations)
    if not records:
        raise DataError(f"{data}: image set {image_set!r} holds no pictures")
    return records


# A bad-pictures message names this many; the rest are counted.
LISTED_BAD = 10


@dataclass(frozen=True)
class PictureCheck:
    """What opening a set's pictures found: ``bad`` (id, reason) for each picture that
    cannot be used, ``truncated`` the ids of pictures read as far as their file goes."""
    bad: tuple[tuple[str, str], ...]
    truncated: tuple[str, ...]


def check_pictures(records: list[Record], progress=None) -> PictureCheck:
    """Decode every picture of ``records`` once and check its size against its
    annotation; ``progress(n, total)`` after each."""
    bad, truncated = [], []
    for r in records:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncatedPictureWarning)
            try:
                _checked_picture(r)
            except DataError as exc:
                bad.append((r.id, str(exc)))
        if any(issubclass(w.category, TruncatedPictureWarning) for w in caught):
            truncated.append(r.id)
        if progress is not None:
            progress(1, len(records))
    return PictureCheck(tuple(bad), tuple(truncated))


def _checked_picture(r: Record) -> np.ndarray:
    array = picture_array(r.picture)
    if (array.shape[1], array.shape[0]) != r.size:
        raise AnnotationError(f"{r.source}: the annotation is for a {r.size[0]} x "
                              f"{r.size[1]} picture, but {r.picture} is {array.shape[1]} "
                              f"x {array.shape[0]} (EXIF orientation applied)")
    return array


def bad_pictures_message(bad, total: int) -> str:
    listed = "; ".join(reason for _, reason in bad[:LISTED_BAD])
    more = f"; and {len(bad) - LISTED_BAD} more" if len(bad) > LISTED_BAD else ""
    return (f"{len(bad)} of {total} pictures cannot be used: {listed}{more}; fix or remove "
            "them, or pass --skip-bad to go on without them")


class VOCDataset(torch.utils.data.Dataset):
    """Annotated pictures (a VOC folder or a COCO file, see the module docstring):
    item -> (image [3, S, S], targets [n, 5]).

    ``augment``, if given (``ssdonnx.training.augment.SSDAugmentation``, say), is called
    as ``augment(rgb_array, targets, rng) -> (array, targets)`` on the HWC image and the
    normalised targets before pre-processing. ``rng`` is a NumPy generator seeded by
    (``seed``, epoch, index): every image draws differently in every epoch, the same run
    draws the same whatever the number of DataLoader workers, and a resumed run goes on
    where it stopped. ``set_epoch`` sets the epoch (DataLoader workers started after the
    call see it; don't use ``persistent_workers``).

    ``annotations``: the XML folder, where it is not found by its name. ``check``:
    decode every picture once when the set is opened (``progress(n, total)`` after each)
    and refuse the set, listing every bad picture in one DataError; with ``skip_bad``
    the bad ones are left out instead and named in ``skipped`` ((id, reason) pairs).
    ``truncated``: ids of pictures that end early, read as far as they go (one warning
    at opening, not again in every epoch). ``notes``: lines worth saying (the
    annotation folder taken by its name, what was skipped).
    """

    def __init__(self, root, image_set: str = "trainval", classes=VOC_CLASSES,
                 size: int = 300, keep_difficult: bool = False, augment=None,
                 seed: int = 0, images=None, mean=SEED_MEAN_RGB, std=(1.0, 1.0, 1.0),
                 annotations=None, check: bool = True, skip_bad: bool = False,
                 progress=None):
        if seed < 0:
            raise InputError(f"seed: expected a non-negative integer, got {seed}")
        self.root = Path(root)
        self.classes = tuple(classes)
        self.size = size
        self.mean, self.std = tuple(mean), tuple(std)
        self.keep_difficult = keep_difficult
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        records = read_records(root, image_set, self.classes, keep_difficult, images,
                               annotations)
        note = None if is_coco(root) else annotation_note(root, annotations)
        self.notes = [note] if note else []
        self.skipped: tuple[tuple[str, str], ...] = ()
        self.truncated: tuple[str, ...] = ()
        if check:
            found = check_pictures(records, progress)
            if found.bad and not skip_bad:
                raise DataError(bad_pictures_message(found.bad, len(records)))
            if found.bad:
                gone = {i for i, _ in found.bad}
                if len(gone) == len(records):
                    raise DataError(bad_pictures_message(found.bad, len(records)))
                records = [r for r in records if r.id not in gone]
                self.skipped = found.bad
                self.notes.append(f"skipped {len(gone)} bad pictures of image set "
                                  f"{image_set!r} (--skip-bad): "
                                  + "; ".join(reason for _, reason in found.bad))
            self.truncated = found.truncated
            if found.truncated:
                warnings.warn(TruncatedPictureWarning(
                    f"{len(found.truncated)} pictures of {root} end early (truncated) and "
                    f"are read as far as they go, the rest grey: "
                    f"{', '.join(found.truncated[:LISTED_BAD])}"
                    + (" ..." if len(found.truncated) > LISTED_BAD else "")), stacklevel=2)
        self.records = records
        self.ids = [r.id for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation's generator for image ``index`` in the current epoch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def annotation(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        r = self.records[index]
        return r.targets, r.difficult, r.size

    def image(self, index: int) -> np.ndarray:
        """The RGB picture, HWC uint8, EXIF orientation applied; refused when its size
        is not the one its annotation is for."""
        r = self.records[index]
        if r.id not in self.truncated:
            return _checked_picture(r)
        with warnings.catch_warnings():     # said once, when the set was opened
            warnings.simplefilter("ignore", TruncatedPictureWarning)
            return _checked_picture(r)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.image(index)
        targets = self.records[index].targets
        if self.augment is not None:
            image, targets = self.augment(image, targets, self.rng(index))
        return self.preprocess(image), torch.from_numpy(targets)

    def preprocess(self, image) -> Tensor:
        return preprocess(image, self.size, mean=self.mean, std=self.std)

    @classmethod
    def for_config(cls, root, image_set: str, cfg, **kwargs) -> VOCDataset:
        """The pictures of ``root`` for the network of ``cfg``: its classes, input size,
        pixel mean and std."""
        classes = cfg.class_names or tuple(f"class {i}" for i in range(1, cfg.num_classes))
        return cls(root, image_set, classes, size=cfg.input_size, mean=cfg.pixel_mean,
                   std=cfg.pixel_std, **kwargs)


def collate(batch) -> tuple[Tensor, Tensor]:
    """[(image, targets [n_i, 5])] -> (images [B, 3, S, S], targets [B, G, 5] padded)."""
    images, targets = zip(*batch)
    return torch.stack(images), pad_targets(list(targets))
