"""SSD configuration: one frozen dataclass and the named JSON presets that ship inside the
package (``ssdonnx/presets/*.json``, read with ``importlib.resources``)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ConfigError

# The presets: package data, present in an editable install, a wheel and a zip alike.
PRESETS = resources.files("ssdonnx") / "presets"

# Bounds a config must keep, so that a file cannot ask for an absurd network (a config
# arrives in JSON files and in ONNX metadata, both of which can lie).
MAX_INPUT_SIZE = 2048
MAX_CLASSES = 10_000
MAX_WIDTH = 4.0
MAX_CHANNELS = 8192
MAX_PRIORS = 500_000
MAX_NAME_CHARS = 200

# The network designs: the seed's VGG16 SSD (ssd.pytorch's layout and state_dict names),
# and the three of qfgaohao/pytorch-ssd (also jetson-inference's), under their --net
# names and with their state_dict names (ssdonnx.mobilenet).
NETWORKS = ("seed-vgg16", "vgg16-ssd", "mb1-ssd", "mb2-ssd-lite")
# The seed's pixel mean: it subtracts the BGR mean (104, 117, 123) and then reorders the
# channels, so the network sees R - 123, G - 117, B - 104 (ssdonnx.transforms).
SEED_MEAN_RGB = (123.0, 117.0, 104.0)


@dataclass(frozen=True)
class SSDConfig:
    # Preset name; also the folder (models/<name>/) that export writes to by default.
    name: str
    # Square input side in pixels (SSD300: 300, SSD512: 512).
    input_size: int
    # Number of classes including background at index 0 (VOC: 20 + 1).
    num_classes: int
    # Side of each source feature map, in DBox order (SSD300: 38, 19, 10, 5, 3, 1).
    feature_maps: tuple[int, ...]
    # Pixel stride of each source map; DBox centres are (j + 0.5) * step / input_size.
    steps: tuple[float, ...]
    # DBox sizes in pixels per source map (SSD paper, section 2.2; seed's DBox class).
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    # Extra aspect ratios per source map; each ratio r adds r and 1/r.
    aspect_ratios: tuple[tuple[float, ...], ...]
    # Extra layers after conv7: (mid channels, out channels, kernel, stride, padding) per
    # block; each block is a 1x1 conv to mid, then a kernel x kernel conv to out (seed's
    # make_extras). The outputs of the blocks are the source maps after conv7.
    extras: tuple[tuple[int, int, int, int, int], ...]
    # Encoding variances for (centre, size) offsets (seed: 0.1, 0.2).
    variances: tuple[float, float] = (0.1, 0.2)
    # Clamp default boxes to [0, 1] (seed: True).
    clip: bool = True
    # Channel multiplier for the VGG base and the extras; 1.0 is the seed's network.
    width: float = 1.0
    # BatchNorm after each VGG conv (ssd.pytorch's vgg(batch_norm=True)); for training
    # from scratch without a pretrained base. False is the seed's network.
    batch_norm: bool = False
    # Optional class names for indices 1..C-1 (background excluded).
    class_names: tuple[str, ...] = ()
    # The network design, one of NETWORKS.
    network: str = "seed-vgg16"
    # Pre-processing: the RGB picture, resized, minus pixel_mean, divided by pixel_std
    # (the seed: minus (123, 117, 104); pytorch-ssd's MobileNets: (x - 127) / 128).
    pixel_mean: tuple[float, float, float] = SEED_MEAN_RGB
    pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        self._check_bounds()
        n = len(self.feature_maps)
        for field in ("steps", "min_sizes", "max_sizes", "aspect_ratios"):
            if len(getattr(self, field)) != n:
                raise ConfigError(
                    f"config {self.name!r}: {field} has {len(getattr(self, field))} entries, "
                    f"feature_maps has {n}"
                )
        if n != 2 + len(self.extras):
            raise ConfigError(
                f"config {self.name!r}: {n} feature maps need {n - 2} extras blocks "
                f"(the base network gives the first two sources), got {len(self.extras)}"
            )
        if self.num_classes < 2:
            raise ConfigError(f"config {self.name!r}: num_classes must be >= 2 (background + 1)")
        if self.class_names and len(self.class_names) != self.num_classes - 1:
            raise ConfigError(
                f"config {self.name!r}: {len(self.class_names)} class_names for "
                f"{self.num_classes - 1} foreground classes"
            )
        if not self.width > 0:
            raise ConfigError(f"config {self.name!r}: width must be > 0, got {self.width}")
        computed = source_map_sizes(self.input_size, self.extras, self.network)
        if tuple(computed) != tuple(self.feature_maps):
            raise ConfigError(
                f"config {self.name!r}: feature_maps {list(self.feature_maps)} do not match "
                f"the network's source maps {computed} for input_size {self.input_size}"
            )

    def _check_bounds(self) -> None:
        def fail(message):
            raise ConfigError(f"config {str(self.name)[:40]!r}: {message}")

        def positive(values, what):
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or \
                        not math.isfinite(v) or v <= 0:
                    fail(f"{what} must be positive numbers, got {str(v)[:20]}")

        if not isinstance(self.name, str) or not 0 < len(self.name) <= MAX_NAME_CHARS:
            fail(f"name must be a string of 1 to {MAX_NAME_CHARS} characters")
        if self.network not in NETWORKS:
            fail(f"network must be one of {', '.join(NETWORKS)}, got {str(self.network)[:40]!r}")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            fail("pixel_mean and pixel_std hold three numbers (R, G, B)")
        positive(self.pixel_std, "pixel_std")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
               for v in self.pixel_mean):
            fail("pixel_mean must be three finite numbers")
        for field, top in (("input_size", MAX_INPUT_SIZE), ("num_classes", MAX_CLASSES)):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
                fail(f"{field} must be a whole number from 1 to {top}, got {str(v)[:20]}")
        positive([self.width], "width")
        if self.width > MAX_WIDTH:
            fail(f"width must be at most {MAX_WIDTH}, got {self.width}")
        if len(self.feature_maps) > 16:
            fail(f"{len(self.feature_maps)} feature maps; at most 16")
        positive(self.feature_maps, "feature_maps")
        positive(self.steps, "steps")
        positive(self.min_sizes, "min_sizes")
        positive(self.max_sizes, "max_sizes")
        for ars in self.aspect_ratios:
            if len(ars) > 8:
                fail("at most 8 aspect ratios per feature map")
            positive(ars, "aspect_ratios")
        positive(self.variances, "variances")
        if len(self.variances) != 2:
            fail(f"variances are (centre, size): two numbers, got {len(self.variances)}")
        for block in self.extras:
            mid, out, kernel, stride, padding = block
            if not (1 <= mid <= MAX_CHANNELS and 1 <= out <= MAX_CHANNELS and 1 <= kernel <= 7
                    and 1 <= stride <= 4 and 0 <= padding <= 3):
                fail(f"extras block {list(block)}: expected channels 1..{MAX_CHANNELS}, kernel "
                     "1..7, stride 1..4, padding 0..3")
        if any(not isinstance(c, str) or not c or len(c) > MAX_NAME_CHARS
               for c in self.class_names):
            fail(f"class_names must be strings of 1 to {MAX_NAME_CHARS} characters")
        if all(isinstance(f, int) for f in self.feature_maps) and \
                sum(f * f * (2 + 2 * len(a)) for f, a in zip(self.feature_maps,
                                                           self.aspect_ratios)) > MAX_PRIORS:
            fail(f"more than {MAX_PRIORS} default boxes")

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        """DBoxes per feature-map cell: two squares plus two per extra aspect ratio."""
        return tuple(2 + 2 * len(ars) for ars in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        return sum(f * f * n for f, n in zip(self.feature_maps, self.boxes_per_location))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> SSDConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a config must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k)[:40] for k in set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown config keys {unknown[:5]}"
                              + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ConfigError(f"{source}: missing config keys {missing}")
        try:
            kwargs = dict(data)
            for key in ("feature_maps", "steps", "min_sizes", "max_sizes", "variances",
                        "class_names", "aspect_ratios", "extras", "pixel_mean", "pixel_std"):
                if key in kwargs and not isinstance(kwargs[key], (list, tuple)):
                    raise ConfigError(f"{source}: {key} must be a list")
                if key in kwargs:
                    kwargs[key] = tuple(kwargs[key])
            kwargs["aspect_ratios"] = tuple(tuple(a) for a in kwargs["aspect_ratios"])
            kwargs["extras"] = tuple(tuple(int(v) for v in e) for e in kwargs["extras"])
            if any(len(e) != 5 for e in kwargs["extras"]):
                raise ConfigError(f"{source}: each extras block is [mid, out, kernel, "
                                  "stride, padding]")
            return cls(**kwargs)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed config: {exc}") from None


def source_map_sizes(input_size: int, extras, network: str = "seed-vgg16") -> list[int]:
    """Spatial sides of the source maps that the SSD network produces."""
    s = input_size
    if network in ("seed-vgg16", "vgg16-ssd"):
        s = s // 2             # pool1
        s = s // 2             # pool2
        s = math.ceil(s / 2)   # pool3, ceil_mode as in the seed (75 -> 38)
        sizes = [s]            # conv4_3
        s = s // 2             # pool4; pool5 (3x3, stride 1, pad 1) and conv6/7 keep it
    else:
        # MobileNets: 3x3 convolutions of stride 2 and padding 1 halve a side rounding
        # up; four of them before the first source (19 at 300), one more for the second.
        for _ in range(4):
            s = math.ceil(s / 2)
        sizes = [s]
        s = math.ceil(s / 2)
    sizes.append(s)            # the base network's last map
    for _mid, _out, kernel, stride, padding in extras:
        s = (s + 2 * padding - kernel) // stride + 1
        sizes.append(s)
    return sizes


# The SSD paper's default box scales (sec. 2.2) as its authors' Caffe scripts
# (ssd_pascal.py) compute them: the first source map at 0.1 of the input (0.2 for its
# larger box), the others evenly from 0.2 to 0.9 in whole percent steps. For SSD300 these
# are the seed's sizes (30, 60, 111, 162, 213, 264; max 60, 111, ..., 315).
PAPER_MIN_RATIO, PAPER_MAX_RATIO = 20, 90
PAPER_FIRST = (10, 20)


def paper_box_sizes(input_size: int, maps: int) -> tuple[list[float], list[float]]:
    """(min_sizes, max_sizes) in pixels for ``maps`` source maps at ``input_size``."""
    if maps < 3:
        raise ConfigError(f"the SSD paper's scales need at least 3 source maps, got {maps}")
    step = (PAPER_MAX_RATIO - PAPER_MIN_RATIO) // (maps - 2)
    ratios = [PAPER_MIN_RATIO + step * k for k in range(maps - 1)]
    min_sizes = [input_size * PAPER_FIRST[0] / 100] + [input_size * r / 100 for r in ratios]
    max_sizes = [input_size * PAPER_FIRST[1] / 100] + [input_size * (r + step) / 100
                                                       for r in ratios]
    return min_sizes, max_sizes


def with_input_size(cfg: SSDConfig, input_size: int, name: str | None = None) -> SSDConfig:
    """``cfg`` for another input side: the source maps the network then produces, their
    steps (input_size / side, so the centres tile the picture evenly) and the SSD
    paper's box sizes (``paper_box_sizes``); the aspect ratios and the rest are kept."""
    if isinstance(input_size, bool) or not isinstance(input_size, int) or \
            not 32 <= input_size <= MAX_INPUT_SIZE:
        raise ConfigError(f"input size: expected a whole number from 32 to {MAX_INPUT_SIZE}, "
                          f"got {input_size!r}")
    sizes = source_map_sizes(input_size, cfg.extras, cfg.network)
    if min(sizes) < 1:
        smallest = next(s for s in range(32, MAX_INPUT_SIZE + 1)
                        if min(source_map_sizes(s, cfg.extras, cfg.network)) >= 1)
        raise ConfigError(f"input size {input_size} is too small for {cfg.name}'s network: "
                          f"its source maps would be {sizes}; the smallest it takes is "
                          f"{smallest}")
    min_sizes, max_sizes = paper_box_sizes(input_size, len(sizes))
    return dataclasses.replace(
        cfg, name=name or f"{cfg.name}-{input_size}", input_size=input_size,
        feature_maps=tuple(sizes), steps=tuple(input_size / f for f in sizes),
        min_sizes=tuple(min_sizes), max_sizes=tuple(max_sizes))


def with_classes(cfg: SSDConfig, class_names, name: str | None = None) -> SSDConfig:
    """``cfg`` for other classes (background not among them): num_classes follows."""
    names = tuple(str(n).strip() for n in class_names)
    if not names or any(not n for n in names):
        raise ConfigError("classes: expected one or more non-empty names")
    if len(set(names)) != len(names):
        raise ConfigError(f"classes: a name appears twice in {list(names)[:10]}")
    if names[0].upper() == "BACKGROUND":
        raise ConfigError("classes: name the object classes only; background is class 0 "
                          "already (a labels.txt that starts with BACKGROUND is read by "
                          "read_class_names)")
    return dataclasses.replace(cfg, name=name or cfg.name, num_classes=len(names) + 1,
                               class_names=names)


def read_class_names(spec) -> tuple[str, ...]:
    """Class names from ``cat,dog`` or a text file of one name per line (pytorch-ssd's
    labels.txt, whose first line BACKGROUND is skipped)."""
    path = Path(str(spec))
    if path.is_file():
        try:
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"classes file {path}: cannot read it ({exc})") from None
        if lines and lines[0].upper() == "BACKGROUND":
            lines = lines[1:]
        return tuple(lines)
    if str(spec).endswith(".txt"):
        raise ConfigError(f"classes file {spec}: no such file")
    return tuple(n.strip() for n in str(spec).split(",") if n.strip())


def describe_priors(cfg: SSDConfig) -> str:
    """The default boxes of ``cfg`` as a table: per source map its side, step, sizes,
    aspect ratios and number of boxes."""
    rows = [("map", "side", "step", "min size", "max size", "aspect ratios", "boxes")]
    for k, (f, step, lo, hi, ars, n) in enumerate(zip(
            cfg.feature_maps, cfg.steps, cfg.min_sizes, cfg.max_sizes, cfg.aspect_ratios,
            cfg.boxes_per_location)):
        rows.append((str(k), f"{f} x {f}", f"{step:g}", f"{lo:g}", f"{hi:g}",
                     ", ".join(f"{a:g}" for a in ars) or "-", str(f * f * n)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"{cfg.num_priors} default boxes for a {cfg.input_size} x {cfg.input_size} "
                 f"input ({cfg.name})")
    return "\n".join(lines)


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in PRESETS.iterdir()
                  if p.name.endswith(".json"))


def get_config(name_or_path: str | Path | SSDConfig) -> SSDConfig:
    """A preset by name (``ssd300-voc``) or a JSON config file by path."""
    if isinstance(name_or_path, SSDConfig):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    # A preset name wins over a folder of that name (export writes models/<name>/).
    if not (text.endswith(".json") or path.is_file()):
        if text not in preset_names():
            raise ConfigError(
                f"unknown config {text!r}; presets: {', '.join(preset_names())} "
                "(or give the path of a JSON file)"
            )
        return SSDConfig.from_dict(json.loads((PRESETS / f"{text}.json").read_text()),
                                   source=f"preset {text!r}")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        if path.stat().st_size > 1 << 20:
            raise ConfigError(f"config file {str(path)!r} is over 1 MB; not a config")
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {str(path)!r} is nested too deeply to be a config") \
            from None
    return SSDConfig.from_dict(data, source=f"config file {str(path)!r}")
