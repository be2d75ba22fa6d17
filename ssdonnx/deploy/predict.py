"""Detection on pictures, the one pipeline every command uses: read (``ssdonnx.pictures``),
pre-process (``ssdonnx.transforms``), run (onnxruntime, or eager PyTorch for a
checkpoint), then boxes in pixels of the picture as given, with class names.

    >>> detector = ssdonnx.Detector("models/ssd-shapes/detector.onnx")
    >>> found = detector(PIL.Image.open("picture.jpg"))    # or a path, or an RGB array
    >>> found.boxes, found.scores, found.labels
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import SSDConfig, get_config, read_class_names
from ..errors import InputError, OnnxFileError
from ..pictures import read_picture

# The command line's default score threshold for what is shown; evaluation keeps all.
DEFAULT_SCORE = 0.5
# Class-name sets that ``labels`` may name instead of a file.
NAMED_LABELS = {"voc": "ssd300-voc", "coco": "ssd300-coco"}


@dataclass
class Detections:
    """Objects found in one picture, best first. ``boxes`` [k, 4] are (x1, y1, x2, y2) in
    pixels of the picture as given; ``class_ids`` are 1..C-1 (0 is background).
    ``best_score``: the best score the detector gave on the picture, kept or not (None
    when it gave none): what says how far off a threshold that kept nothing was."""
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: list[str]
    width: int
    height: int
    best_score: float | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def to_list(self, digits: int = 1) -> list[dict]:
        """Rows as ``detections.json`` holds them."""
        return [{"label": label, "class_id": int(c), "score": round(float(s), 4),
                 "box": [round(float(v), digits) for v in box]}
                for box, s, c, label in zip(self.boxes, self.scores, self.class_ids,
                                            self.labels)]


def class_names(labels, cfg: SSDConfig) -> list[str]:
    """Names for classes 1..C-1: ``voc``, ``coco``, a text file (one name per line; a
    first line ``BACKGROUND``, pytorch-ssd's convention, is skipped), a list, or None
    for the config's own names (``class 1``, ... where it has none)."""
    if labels is None:
        names = list(cfg.class_names) or [f"class {i}" for i in range(1, cfg.num_classes)]
    elif isinstance(labels, (list, tuple)):
        names = [str(n) for n in labels]
    elif str(labels) in NAMED_LABELS:
        names = list(get_config(NAMED_LABELS[str(labels)]).class_names)
    else:
        if not Path(labels).is_file():
            raise InputError(f"labels {str(labels)!r}: expected voc, coco or a text file")
        names = list(read_class_names(labels))
    if len(names) != cfg.num_classes - 1:
        raise InputError(f"labels: {len(names)} names for the model's {cfg.num_classes - 1} "
                         "foreground classes")
    return names


class Detector:
    """A detector for pictures.

    model: an exported ``detector.onnx`` (run in onnxruntime on ``provider``) or a
    checkpoint (run in eager PyTorch; ``config`` names its config). ``score``: the
    lowest score kept by ``__call__`` and ``detect``. ``labels``: see ``class_names``.
    """

    def __init__(self, model, config: str | SSDConfig | None = None, provider: str = "auto",
                 score: float = DEFAULT_SCORE, labels=None, threads: int | None = None):
        if not 0 <= score <= 1:
            raise InputError(f"score: expected a value in [0, 1], got {score}")
        self.score = float(score)
        self.path = Path(model)
        if self.path.suffix == ".onnx":
            from .onnxfile import check_runnable, load_proto, read_info
            from .runtime import Session

            proto = load_proto(self.path)
            info = read_info(self.path, kind="detector", proto=proto)
            check_runnable(info, proto)
            del proto
            self.config = info.config
            self.max_detections = info.thresholds.get("max_detections")
            self.session = Session(self.path, provider, threads)
            self.note = self.session.note
            self.runtime = f"onnxruntime {self.session.provider}"
            self._run = self._run_onnx
        else:
            from ..model import checkpoint_config, config_for
            from .graphs import build_graph

            if config is None and checkpoint_config(self.path) is None:
                raise InputError(f"{model}: a checkpoint that does not carry its config needs "
                                 "one (--config)")
            self.config = config_for(config, self.path)
            self.graph = build_graph("detector", self.config, self.path)
            self.max_detections = self.graph.head.max_detections
            self.note = ""
            self.runtime = "PyTorch eager"
            self._run = self._run_eager
        self.names = class_names(labels, self.config)

    def _run_onnx(self, images):
        out = self.session.run(images=images)
        return np.asarray(out["detections"]), np.asarray(out["num_detections"])

    def _run_eager(self, images):
        import torch

        with torch.no_grad():
            dets, num = self.graph(torch.as_tensor(images))
        return dets.numpy(), num.numpy()

    def predict(self, images) -> list[np.ndarray]:
        """Pre-processed pictures [B, 3, S, S] -> per picture its detections [k, 6]
        (x1, y1, x2, y2 normalised, score, class), all the graph keeps, best first."""
        dets, num = self._run(images)
        B = len(images)
        if dets.ndim != 3 or dets.shape[0] != B or dets.shape[2] != 6 \
                or num.shape != (B,) or ((num < 0) | (num > dets.shape[1])).any():
            raise OnnxFileError(f"{self.path} gave detections of shape {list(dets.shape)} "
                                f"and counts {num.tolist()[:8]} for {B} pictures: not a "
                                "detector's outputs")
        out = [d[: int(n)] for d, n in zip(dets, num)]
        for rows in out:
            classes = rows[:, 5]
            bad = ~np.isfinite(rows).all(1) | (classes < 1) \
                | (classes > self.config.num_classes - 1) | (classes != np.round(classes))
            if bad.any():
                raise OnnxFileError(
                    f"{self.path} gave a detection outside its contract (non-finite values, "
                    f"or a class outside 1..{self.config.num_classes - 1}): "
                    f"{rows[bad][:1].tolist()}")
        return out

    def preprocess(self, pictures) -> np.ndarray:
        from ..transforms import preprocess_for

        return np.stack([preprocess_for(p, self.config).numpy() for p in pictures])

    def detect(self, pictures, score: float | None = None) -> list[Detections]:
        """Pictures (PIL images, RGB arrays HWC, or paths) -> their ``Detections``."""
        pictures = [_picture(p) for p in pictures]
        score = self.score if score is None else score
        results = []
        for picture, rows in zip(pictures, self.predict(self.preprocess(pictures))):
            W, H = _size(picture)
            best = float(rows[:, 4].max()) if len(rows) else None
            rows = rows[rows[:, 4] >= score]
            results.append(Detections(
                boxes=rows[:, :4] * np.array([W, H, W, H], dtype=np.float32),
                scores=rows[:, 4].copy(), class_ids=rows[:, 5].astype(np.int64),
                labels=[self.names[int(c) - 1] for c in rows[:, 5]], width=W, height=H,
                best_score=best))
        return results

    def __call__(self, picture, score: float | None = None) -> Detections:
        return self.detect([picture], score)[0]


def _picture(p):
    if isinstance(p, (str, Path)):
        return read_picture(p)
    return p


def _size(picture) -> tuple[int, int]:
    if isinstance(picture, np.ndarray):
        return picture.shape[1], picture.shape[0]
    return picture.size
