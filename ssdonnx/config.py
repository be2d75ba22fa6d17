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
                f"(conv4_3 and conv7 are the first two sources), got {len(self.extras)}"
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
        computed = source_map_sizes(self.input_size, self.extras)
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
                        "class_names", "aspect_ratios", "extras"):
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


def source_map_sizes(input_size: int, extras) -> list[int]:
    """Spatial sides of the source maps that the SSD network produces."""
    s = input_size
    s = s // 2             # pool1
    s = s // 2             # pool2
    s = math.ceil(s / 2)   # pool3, ceil_mode as in the seed (75 -> 38)
    sizes = [s]            # conv4_3
    s = s // 2             # pool4; pool5 (3x3, stride 1, pad 1) and conv6/7 keep the size
    sizes.append(s)        # conv7
    for _mid, _out, kernel, stride, padding in extras:
        s = (s + 2 * padding - kernel) // stride + 1
        sizes.append(s)
    return sizes


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".json") for p in PRESETS.iterdir()
                  if p.name.endswith(".json"))


def get_config(name_or_path: str | Path | SSDConfig) -> SSDConfig:
    """A preset by name (``ssd300-voc``) or a JSON config file by path."""
    if isinstance(name_or_path, SSDConfig):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.exists()):
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
