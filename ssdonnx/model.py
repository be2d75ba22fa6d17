"""The SSD network (VGG16 base, extras, L2Norm, loc/conf heads) and checkpoint loading."""

from __future__ import annotations

import dataclasses
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import checks
from .config import SSDConfig
from .errors import CheckpointError

# The seed's VGG16 layout: channels, 'M' max pool 2x2, 'C' the same with ceil_mode.
VGG_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)


def _channels(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def make_vgg(width: float = 1.0, batch_norm: bool = False) -> nn.ModuleList:
    layers: list[nn.Module] = []
    in_ch = 3
    for v in VGG_LAYOUT:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif v == "C":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            out = _channels(v, width)
            layers.append(nn.Conv2d(in_ch, out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            in_ch = out
    fc = _channels(1024, width)
    layers += [
        nn.MaxPool2d(3, 1, padding=1),                            # pool5
        nn.Conv2d(in_ch, fc, 3, padding=6, dilation=6),           # conv6 (atrous fc6)
        nn.ReLU(inplace=True),
        nn.Conv2d(fc, fc, 1),                                     # conv7 (fc7)
        nn.ReLU(inplace=True),
    ]
    return nn.ModuleList(layers)


def conv4_3_end(vgg: nn.ModuleList) -> int:
    """Index in ``vgg`` just after conv4_3's ReLU (23 in the seed's layout): the 10th
    convolution, then its BatchNorm if any, then its ReLU."""
    convs = [i for i, m in enumerate(vgg) if isinstance(m, nn.Conv2d)]
    i = convs[9] + 1
    while not isinstance(vgg[i], nn.ReLU):
        i += 1
    return i + 1


def make_extras(cfg: SSDConfig, in_ch: int) -> nn.ModuleList:
    layers = []
    for mid, out, kernel, stride, padding in cfg.extras:
        mid, out = _channels(mid, cfg.width), _channels(out, cfg.width)
        layers += [nn.Conv2d(in_ch, mid, 1),
                   nn.Conv2d(mid, out, kernel, stride=stride, padding=padding)]
        in_ch = out
    return nn.ModuleList(layers)


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned scale (ParseNet), on conv4_3."""

    def __init__(self, channels: int = 512, scale: float = 20.0, eps: float = 1e-10):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # The seed divides by norm + eps. Exported, that sum is folded to norm (the
        # exporter's optimizer drops adding a tiny constant), and all-zero features, which
        # flat pictures give, become 0/0 = NaN in ONNX. max(norm, eps) is a guard no
        # optimiser can drop; it equals the seed's divisor in float32 wherever
        # norm >= 2e-3 (eps is below half an ulp there), is within eps / norm of it
        # below, and gives 0, as the seed does, where the features are all zero.
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt().clamp(min=self.eps)
        return self.weight[None, :, None, None] * (x / norm)


class SSD(nn.Module):
    """SSD network: images [B, 3, H, W] -> (loc [B, P, 4], conf [B, P, C]) raw outputs.

    Module names follow the seed code base (``vgg``, ``extras``, ``L2Norm``, ``loc``,
    ``conf``), so its checkpoints load with ``strict=True``. No post-processing here.
    """

    # Where a base-only checkpoint (ImageNet weights) goes.
    base_name = "vgg"

    def __init__(self, cfg: SSDConfig, validate: bool = True):
        super().__init__()
        self.cfg = cfg
        self.validate = validate
        self.num_classes = cfg.num_classes
        self.vgg = make_vgg(cfg.width, cfg.batch_norm)
        self.conv4_3_end = conv4_3_end(self.vgg)
        conv4_3 = [m for m in self.vgg[: self.conv4_3_end] if isinstance(m, nn.Conv2d)][-1]
        conv4_3 = conv4_3.out_channels
        fc7 = self.vgg[-2].out_channels
        self.extras = make_extras(cfg, fc7)
        self.L2Norm = L2Norm(conv4_3, 20.0)
        source_channels = [conv4_3, fc7] + [m.out_channels for m in self.extras[1::2]]
        A = cfg.boxes_per_location
        self.loc = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1)
                                 for c, a in zip(source_channels, A))
        self.conf = nn.ModuleList(nn.Conv2d(c, a * cfg.num_classes, 3, padding=1)
                                  for c, a in zip(source_channels, A))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The seed's initialisation: Xavier-uniform conv weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.validate and not checks.is_exporting():
            checks.check_images(images, self.cfg.input_size)
        x = images
        for layer in self.vgg[: self.conv4_3_end]:
            x = layer(x)
        sources = [self.L2Norm(x)]
        for layer in self.vgg[self.conv4_3_end:]:
            x = layer(x)
        sources.append(x)
        for i, layer in enumerate(self.extras):
            x = F.relu(layer(x))
            if i % 2 == 1:
                sources.append(x)
        # [B, A*4, f, f] -> [B, f, f, A*4] -> [B, f*f*A, 4]: the DBox order.
        loc = torch.cat([per_box(head(s), 4) for head, s in zip(self.loc, sources)], 1)
        conf = torch.cat([per_box(head(s), self.num_classes)
                          for head, s in zip(self.conf, sources)], 1)
        return loc, conf                                                  # [B, P, 4], [B, P, C]


def per_box(x: Tensor, values: int) -> Tensor:
    """A head's output [B, A * values, f, f] -> [B, f * f * A, values]: the DBox order.
    Sizes from the shape, not -1, so that an empty batch (B = 0) reshapes too."""
    B, channels, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, h * w * (channels // values), values)


# A checkpoint may hold at most this much once unpacked (SSD512 for COCO is about
# 100 MB); torch writes its archives uncompressed, so a high compression ratio is a
# decompression bomb, not a checkpoint.
MAX_CHECKPOINT_BYTES = 2 << 30
MAX_COMPRESSION_RATIO = 20


def _check_archive(path: Path) -> None:
    """Refuse, from the zip directory alone, a checkpoint that would unpack to more than
    ``MAX_CHECKPOINT_BYTES`` or that is compressed as no torch checkpoint is."""
    if not zipfile.is_zipfile(path):
        return       # torch's legacy format: its size is the file's
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return       # torch.load names the problem
    total = sum(e.file_size for e in entries)
    packed = sum(e.compress_size for e in entries)
    if total > MAX_CHECKPOINT_BYTES or total > MAX_COMPRESSION_RATIO * max(packed, 1) + (1 << 20):
        raise CheckpointError(f"checkpoint {str(path)!r} declares {total / 2**20:.0f} MiB of data "
                              f"in {path.stat().st_size / 2**20:.1f} MiB; not a checkpoint")


def read_checkpoint_object(path: str | Path):
    """What a checkpoint file holds, loaded with ``weights_only=True`` (tensors and plain
    containers only, no code), or CheckpointError saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such file")
    _check_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError,
            ValueError, OSError, AttributeError, KeyError, IndexError, TypeError,
            MemoryError, RecursionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated, corrupt or not a "
                              f"PyTorch checkpoint: {first[:200]}") from None


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state_dict in a checkpoint file: a plain state_dict, or a dict holding one under
    ``state_dict``, ``model`` or ``net``. Only tensors are loaded (weights_only=True)."""
    obj = read_checkpoint_object(path)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or \
            not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise CheckpointError(f"checkpoint {str(path)!r} holds no state_dict "
                              "(a dict of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def checkpoint_config(path: str | Path):
    """The config a checkpoint written by ``ssdonnx train`` carries, or None for a plain
    state_dict (the seed's format, pytorch-ssd's)."""
    from .config import SSDConfig

    obj = read_checkpoint_object(path)
    if isinstance(obj, dict) and isinstance(obj.get("config"), str):
        try:
            return SSDConfig.from_dict(json.loads(obj["config"]), source=f"checkpoint {path}")
        except (json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"checkpoint {str(path)!r}: its config is not JSON") from None
    return None


def head_classes(state: dict, cfg: SSDConfig) -> int | None:
    """The class count a state_dict's first classification head is made for (its output
    channels over the boxes per cell), or None where it has no such head."""
    for key in ("conf.0.weight", "classification_headers.0.weight",
                "classification_headers.0.3.weight"):
        if key in state and state[key].dim() == 4:
            out = state[key].shape[0]
            per_cell = cfg.boxes_per_location[0]
            return out // per_cell if out % per_cell == 0 else None
    return None


def config_for(config=None, weights=None, labels=None) -> SSDConfig:
    """The config to build a network for: the one a checkpoint of ``ssdonnx train``
    carries (``config``, if given, must agree), else ``config`` (default ``ssd300-voc``)
    with the class count of the checkpoint's heads (pytorch-ssd's and other plain
    state_dicts: their class count is in their shapes). ``labels``: class names, a file
    of one per line (pytorch-ssd's labels.txt, BACKGROUND first) or ``cat,dog``; their
    number must fit."""
    from .config import get_config, read_class_names, with_classes

    carried = checkpoint_config(weights) if weights is not None else None
    if carried is not None:
        if config is not None:
            given = get_config(config)
            if dataclasses.replace(given, name=carried.name, num_classes=carried.num_classes,
                                   class_names=carried.class_names) != carried:
                raise CheckpointError(f"checkpoint {str(weights)!r} was trained as "
                                      f"{carried.name} ({carried.network}, "
                                      f"{carried.num_classes} classes); --config {given.name} "
                                      "describes another network: leave --config out")
        cfg = carried
    else:
        cfg = get_config(config if config is not None else "ssd300-voc")
        if weights is not None:
            classes = head_classes(read_checkpoint(weights), cfg)
            if classes is not None and classes != cfg.num_classes:
                names = [f"class {i}" for i in range(1, classes)] if classes > 1 else []
                cfg = with_classes(cfg, names, name=cfg.name)
    if labels is not None:
        names = read_class_names(labels) if not isinstance(labels, (list, tuple)) else labels
        if len(names) != cfg.num_classes - 1:
            raise CheckpointError(
                f"labels {labels}: {len(names)} class names (background not counted), but "
                f"the network has {cfg.num_classes - 1} classes besides background"
                + (f" (read from {weights})" if weights is not None else ""))
        cfg = with_classes(cfg, names, name=cfg.name)
    return cfg


def _base_only(state: dict) -> bool:
    """A base network alone, as ImageNet weights come (``vgg16_reducedfc.pth`` of the
    seed's code base: keys ``0.weight`` ... ``33.bias``)."""
    return all(k.split(".")[0].isdigit() for k in state)


def _check_finite(state: dict, path) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: NaN or inf in "
                              f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint into ``model`` strictly; a base-only file (such as
    ``vgg16_reducedfc.pth``, keys ``0.weight`` ... ``33.bias``) goes into the base
    network (``model.vgg``; ``model.base_net`` for pytorch-ssd's designs)."""
    state = read_checkpoint(path)
    target: nn.Module = model
    if _base_only(state):
        target = getattr(model, model.base_name)
    expected = target.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(f"{k} {list(state[k].shape)} (model: {list(expected[k].shape)})"
                        for k in set(state) & set(expected)
                        if state[k].shape != expected[k].shape)
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("mis-shaped", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)"
                                               if len(keys) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit {model.cfg.name} "
                              f"({model.cfg.num_classes} classes): " + "; ".join(parts))
    _check_finite(state, path)
    target.load_state_dict(state, strict=True)
    return model


@dataclass
class LoadReport:
    """What ``load_matching`` took from a checkpoint: tensors loaded, tensors of the model
    left as initialised (absent, or of another shape), and checkpoint tensors unused."""
    path: Path
    loaded: list[str]
    initialised: list[str]
    ignored: list[str]

    def summary(self) -> str:
        def modules(keys):
            names = sorted({k.rsplit(".", 1)[0] for k in keys})
            return ", ".join(names[:8]) + (f", ... ({len(names)} modules)" if len(names) > 8
                                           else "")
        lines = [f"from {self.path}: loaded {len(self.loaded)} tensors"]
        if self.initialised:
            lines.append(f"  initialised {len(self.initialised)} (not in the checkpoint, or "
                         f"of another shape): {modules(self.initialised)}")
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)} of the checkpoint's: "
                         f"{modules(self.ignored)}")
        return "\n".join(lines)


def load_matching(model: nn.Module, path: str | Path) -> LoadReport:
    """Load every tensor of a checkpoint that fits ``model`` (same name and shape) and
    leave the rest as initialised: to fine-tune from weights for other classes (the
    class heads differ), or to start from a base network alone (ImageNet weights such as
    ``vgg16_reducedfc.pth``). Raises CheckpointError when nothing fits."""
    state = read_checkpoint(path)
    _check_finite(state, path)
    prefix = ""
    if _base_only(state):
        prefix = f"{model.base_name}."
        state = {prefix + k: v for k, v in state.items()}
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.endswith(("weight", "bias")) for k in fits):
        raise CheckpointError(f"checkpoint {str(path)!r}: none of its tensors fit "
                              f"{model.cfg.name} ({model.cfg.network}); is it for another "
                              "network?")
    model.load_state_dict(fits, strict=False)
    return LoadReport(Path(path), sorted(fits), sorted(set(own) - set(fits)),
                      sorted(k.removeprefix(prefix) for k in set(state) - set(fits)))
