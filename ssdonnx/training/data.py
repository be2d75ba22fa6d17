"""Pascal VOC data (the seed's format) and a collate function that pads targets.

Layout under ``root``: ``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` and
``ImageSets/Main/<image_set>.txt`` (one id per line). Targets are ``[n, 5]`` rows
(x1, y1, x2, y2, label) normalised to [0, 1] as the seed does: (pixel - 1) / size.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, InputError
from ..matching import pad_targets
from ..pictures import picture_array
from ..transforms import preprocess

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")


class AnnotationError(DataError):
    """A VOC annotation file that cannot be read."""


def parse_annotation(path, classes, keep_difficult: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, tuple]:
    """One VOC XML file -> (targets float32 [n, 5] normalised, difficult bool [n],
    (width, height)). Difficult objects are dropped unless ``keep_difficult``."""
    try:
        root = ET.parse(path).getroot()
        width = int(root.find("size/width").text)
        height = int(root.find("size/height").text)
    except (ET.ParseError, AttributeError, TypeError, ValueError, OSError) as exc:
        raise AnnotationError(f"{path}: not a VOC annotation ({exc})") from None
    rows, flags = [], []
    for i, obj in enumerate(root.iter("object")):
        difficult = obj.find("difficult")
        is_difficult = difficult is not None and int(difficult.text) == 1
        if is_difficult and not keep_difficult:
            continue
        name = obj.find("name").text.strip()
        if name not in classes:
            raise AnnotationError(f"{path}: object {i} has class {name!r}, not one of "
                                  f"the {len(classes)} classes")
        box = obj.find("bndbox")
        try:
            # VOC pixels are 1-based; the seed subtracts 1 and divides by the size.
            x1, y1, x2, y2 = (int(float(box.find(k).text)) - 1
                              for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise AnnotationError(f"{path}: object {i} has no valid bndbox") from None
        rows.append([x1 / width, y1 / height, x2 / width, y2 / height,
                     classes.index(name)])
        flags.append(is_difficult)
    return (np.array(rows, dtype=np.float32).reshape(-1, 5), np.array(flags, dtype=bool),
            (width, height))


class VOCDataset(torch.utils.data.Dataset):
    """Pascal VOC images and annotations: item -> (image [3, S, S], targets [n, 5]).

    ``augment``, if given (``ssdonnx.training.augment.SSDAugmentation``, say), is called as
    ``augment(rgb_array, targets, rng) -> (array, targets)`` on the HWC image and the
    normalised targets before pre-processing. ``rng`` is a NumPy generator seeded by
    (``seed``, epoch, index): every image draws differently in every epoch, the same run
    draws the same whatever the number of DataLoader workers, and a resumed run goes on
    where it stopped. ``set_epoch`` sets the epoch (DataLoader workers started after the
    call see it; don't use ``persistent_workers``).
    """

    def __init__(self, root, image_set: str = "trainval", classes=VOC_CLASSES,
                 size: int = 300, keep_difficult: bool = False, augment=None,
                 seed: int = 0):
        self.root = Path(root)
        self.classes = tuple(classes)
        self.size = size
        self.keep_difficult = keep_difficult
        self.augment = augment
        if seed < 0:
            raise InputError(f"seed: expected a non-negative integer, got {seed}")
        self.seed = seed
        self.epoch = 0
        list_file = self.root / "ImageSets" / "Main" / f"{image_set}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"{list_file}: no such image set in {self.root}")
        self.ids = [line.strip() for line in list_file.read_text().splitlines()
                    if line.strip()]

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        """The augmentation's generator for image ``index`` in the current epoch."""
        return np.random.default_rng((self.seed, self.epoch, index))

    def annotation(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple]:
        return parse_annotation(self.root / "Annotations" / f"{self.ids[index]}.xml",
                                self.classes, self.keep_difficult)

    def image(self, index: int) -> np.ndarray:
        """The RGB picture, HWC uint8, as stored."""
        return picture_array(self.root / "JPEGImages" / f"{self.ids[index]}.jpg")

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.image(index)
        targets, _, _ = self.annotation(index)
        if self.augment is not None:
            image, targets = self.augment(image, targets, self.rng(index))
        return preprocess(image, self.size), torch.from_numpy(targets)


def collate(batch) -> tuple[Tensor, Tensor]:
    """[(image, targets [n_i, 5])] -> (images [B, 3, S, S], targets [B, G, 5] padded)."""
    images, targets = zip(*batch)
    return torch.stack(images), pad_targets(list(targets))
