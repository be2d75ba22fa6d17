"""Training with the seed's recipe: SGD (lr 1e-3, momentum 0.9, weight decay 5e-4), the
batched MultiBoxLoss, gradient values clipped at 2 (the seed code base's train loop), and
the SSD paper's augmentation (``ssdonnx.training.augment``).
Runs as one process, or under ``torchrun`` with DistributedDataParallel (gloo on CPU,
nccl on GPU) and the loss normalised by the global number of positives."""

from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..config import get_config
from ..deploy import files
from ..errors import CheckpointError, InputError, OutputError
from ..loss import MultiBoxLoss
from ..model import SSD, load_weights, read_checkpoint_object
from ..priors import default_boxes
from .augment import AUGMENTATIONS
from .data import VOCDataset, collate

GRAD_CLIP = 2.0   # clip_grad_value_ in the seed code base's training loop


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def make_loader(dataset: VOCDataset, batch: int, seed: int = 0, world: int = 1,
                rank: int = 0, workers: int = 0):
    """A DataLoader over this process's share of ``dataset`` and its sampler. Call
    ``sampler.set_epoch(e)`` and ``dataset.set_epoch(e)`` before each epoch: the order
    and the augmentation then depend on (seed, epoch) alone, not on the workers."""
    sampler = torch.utils.data.DistributedSampler(dataset, world, rank, shuffle=True,
                                                  seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler,
                                         collate_fn=collate, num_workers=workers,
                                         drop_last=len(dataset) >= batch * world)
    return loader, sampler


def _resumed(state: dict, name: str, given, default):
    """A run setting on --resume: the checkpoint's, unless given differently."""
    stored = state.get(name)
    if given is not None and stored is not None and given != stored:
        raise InputError(f"{name} {given!r} differs from the run being resumed "
                         f"({name} {stored!r}); leave it out to continue that run")
    return given if given is not None else stored if stored is not None else default


# What a resume file (last.pth) holds, beyond the settings of the run.
RESUME_KEYS = ("model", "optimizer", "epoch")


def read_resume(path) -> dict:
    """A ``last.pth`` written by ``train``, checked: CheckpointError for anything else."""
    state = read_checkpoint_object(path)
    if not isinstance(state, dict) or any(k not in state for k in RESUME_KEYS) or \
            not isinstance(state["model"], dict) or not isinstance(state["optimizer"], dict) \
            or not isinstance(state["epoch"], int) or state["epoch"] < 0:
        raise CheckpointError(f"{path} is not a resume file (last.pth of `ssdonnx train`: "
                              f"{', '.join(RESUME_KEYS)}); to start from its weights, pass it "
                              "as --weights")
    return state


def existing_run(out: Path) -> list[Path]:
    """The checkpoints of an earlier run in ``out``."""
    return sorted(out.glob("last.pth")) + sorted(out.glob("*-epoch*.pth")) if out.is_dir() \
        else []


def save_checkpoint(obj, path: Path) -> None:
    """``torch.save`` whole or not at all: serialised in memory, then written by
    temporary file and rename, so that a kill, Ctrl-C or a full disk never leaves a cut
    checkpoint (or loses the one it replaces)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    files.write_bytes(path, buffer.getvalue())


def train(config, data, out, epochs: int = 10, batch: int = 32, lr: float = 1e-3,
          weights=None, resume=None, seed: int | None = None, classes=None,
          workers: int = 0, schedule: str = "constant", augment: str | None = None,
          amp: bool = False, force: bool = False, image_set: str = "train",
          log=print, progress=None) -> list[dict]:
    """Train an SSD on a VOC-layout folder; returns per-epoch mean losses.

    Writes ``<out>/<config>-epoch<N>.pth`` (a plain state_dict, the seed's format) and
    ``<out>/last.pth`` (model, optimizer and epoch, for ``resume``) after every epoch.
    ``batch`` is per process. ``schedule``: ``constant`` (the seed) or ``cosine`` (one
    epoch of warm-up, then cosine decay). ``augment``: ``ssd`` (the SSD paper's, the
    default), ``simple`` or ``none``. ``seed`` fixes the initialisation, the order and
    the augmentation (default 0); ``resume`` continues a run with its seed and
    augmentation. ``amp``: mixed precision, float16 with gradient scaling on CUDA and
    bfloat16 on the CPU; the loss is computed in float32 either way.

    ``out`` must not hold an earlier run's checkpoints unless ``resume`` continues it or
    ``force`` replaces them; it is checked for writing before any work. Checkpoints are
    written whole or not at all.
    """
    cfg = get_config(config)
    out = Path(out)
    if not math.isfinite(lr) or lr <= 0:
        raise InputError(f"lr: expected a positive number, got {lr}")
    state = {}
    if resume is not None:
        state = read_resume(resume)
        if state.get("config") not in (None, cfg.to_json()):
            raise InputError(f"{resume} was trained with another config than {cfg.name}")
    elif existing_run(out) and not force:
        raise OutputError(f"{out} holds checkpoints of an earlier run "
                          f"({', '.join(p.name for p in existing_run(out)[:3])}); pass --resume "
                          f"{out / 'last.pth'} to continue it, --force to replace it, or "
                          "choose another folder")
    seed = _resumed(state, "seed", seed, 0)
    augment = _resumed(state, "augment", augment, "ssd")
    if augment not in (*AUGMENTATIONS, "none"):
        raise InputError(f"augment: expected one of {', '.join(AUGMENTATIONS)} or none, "
                         f"got {augment!r}")
    rank, world = _distributed()
    if rank == 0:
        files.check_writable(out)
    if torch.cuda.is_available():
        # One GPU per process: torchrun's LOCAL_RANK picks it (the rank on a single node).
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)   # nccl's collectives use the current device
    else:
        device = torch.device("cpu")
    torch.manual_seed(seed)
    classes = classes or cfg.class_names
    dataset = VOCDataset(data, image_set, classes, size=cfg.input_size, seed=seed,
                         augment=AUGMENTATIONS[augment]() if augment != "none" else None)
    loader, sampler = make_loader(dataset, batch, seed, world, rank, workers)
    net = SSD(cfg)
    if weights is not None:
        load_weights(net, weights)
    net = net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    # float16 needs gradient scaling against underflow; bfloat16 has float32's range.
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    start = 0
    if state:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start = int(state["epoch"])
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    criterion = MultiBoxLoss(num_classes=cfg.num_classes, variances=cfg.variances,
                             normalize="global" if world > 1 else "batch")
    dbox = default_boxes(cfg).to(device)
    steps_total = max(1, epochs * len(loader))
    history = []
    if rank == 0:
        log(f"training {cfg.name} on {device.type} from epoch {start + 1} to {epochs}: "
            f"seed {seed}, augmentation {augment}"
            + (f", mixed precision {str(amp_dtype).removeprefix('torch.')}" if amp else ""))
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        sums, n_images, t0 = [0.0, 0.0], 0, time.perf_counter()
        for step, (images, targets) in enumerate(loader):
            if schedule == "cosine":
                # One epoch of linear warm-up (from-scratch training without a
                # pretrained base), then cosine decay to 0.
                i = epoch * len(loader) + step
                warm = min(1.0, (i + 1) / len(loader))
                for group in optimizer.param_groups:
                    group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * i / steps_total))
            images, targets = images.to(device), targets.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                loc, conf = model(images)
            # Outside autocast: the loss takes float32 (it casts half inputs up itself).
            loss_l, loss_c = criterion((loc, conf, dbox), targets)
            optimizer.zero_grad()
            scaler.scale(loss_l + loss_c).backward()
            scaler.unscale_(optimizer)          # clip the true gradients
            nn.utils.clip_grad_value_(net.parameters(), GRAD_CLIP)
            scaler.step(optimizer)
            scaler.update()
            sums[0] += float(loss_l.detach()) * len(images)
            sums[1] += float(loss_c.detach()) * len(images)
            n_images += len(images)
            if progress and rank == 0:
                progress(len(images) * world, total=len(dataset), epoch=epoch + 1,
                         loss_l=float(loss_l.detach()),
                         loss_c=float(loss_c.detach()),
                         rate=n_images * world / (time.perf_counter() - t0))
        record = {"epoch": epoch + 1, "loss_l": sums[0] / max(n_images, 1),
                  "loss_c": sums[1] / max(n_images, 1),
                  "images_per_s": n_images * world / (time.perf_counter() - t0)}
        history.append(record)
        if rank == 0:
            save_checkpoint(net.state_dict(), out / f"{cfg.name}-epoch{epoch + 1}.pth")
            save_checkpoint({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "epoch": epoch + 1,
                             "config": cfg.to_json(), "seed": seed, "augment": augment},
                            out / "last.pth")
            log(f"epoch {epoch + 1}/{epochs}: loss_l {record['loss_l']:.4f}  "
                f"loss_c {record['loss_c']:.4f}  {record['images_per_s']:.1f} images/s")
    if world > 1:
        dist.barrier()
    return history
