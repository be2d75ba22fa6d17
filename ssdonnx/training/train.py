"""Training with the seed's recipe: SGD (lr 1e-3, momentum 0.9, weight decay 5e-4), the
batched MultiBoxLoss, gradient values clipped at 2 (the seed code base's train loop), and
the SSD paper's augmentation (``ssdonnx.training.augment``); optionally warm-up and a
step or cosine schedule, validation mAP with the best checkpoint kept, and a CSV log.
Runs as one process, or under ``torchrun`` with DistributedDataParallel (gloo on CPU,
nccl on GPU) and the loss normalised by the global number of positives.

A run's folder holds ``last.pth`` (everything to ``--resume`` it), ``best.pth`` (the
weights of the best validation mAP, when validating), ``<name>-epoch<N>.pth`` for the
last epoch and every ``keep_every``-th, and ``log.csv``. Every checkpoint carries its
config (``{"model": state_dict, "config": ..., "epoch": N}``), so ``export``,
``evaluate`` and ``detect`` need no ``--config`` for it.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..config import SSDConfig, get_config, read_class_names, with_classes, with_input_size
from ..deploy import files
from ..errors import CheckpointError, InputError, OutputError
from ..loss import MultiBoxLoss
from ..model import load_matching, read_checkpoint_object
from ..networks import build_model
from ..postprocess import SSDDetector
from ..priors import default_boxes
from .augment import AUGMENTATIONS
from .data import VOCDataset, collate, dataset_classes
from .evaluate import evaluate

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
    if not out.is_dir():
        return []
    return sorted(out.glob("last.pth")) + sorted(out.glob("best.pth")) + \
        sorted(out.glob("*-epoch*.pth"))


def save_checkpoint(obj, path: Path) -> None:
    """``torch.save`` whole or not at all: serialised in memory, then written by
    temporary file and rename, so that a kill, Ctrl-C or a full disk never leaves a cut
    checkpoint (or loses the one it replaces)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    files.write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def deferred_interrupt():
    """Ctrl-C during training, taken at the next step boundary: yields ``check()``, which
    raises KeyboardInterrupt once a SIGINT has come. Python raises KeyboardInterrupt
    wherever the main thread runs Python code, which in training includes Python called
    from PyTorch's C++ (custom operators, autograd functions), where it can abort the
    process instead ("terminate called after throwing ... KeyboardInterrupt", exit -6).
    A second Ctrl-C interrupts at once. Outside the main thread, or where SIGINT has a
    handler of the application's, nothing changes (``check`` does nothing)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield lambda: None
        return
    pending = []

    def note(signum, frame):
        pending.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def check():
        if pending:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass(frozen=True)
class Schedule:
    """The learning rate per step: ``warmup`` epochs rising linearly from 0 (for training
    from scratch), then ``constant`` (the seed), ``step`` (x ``gamma`` at each epoch of
    ``steps``, as ssd.pytorch lowers it at fixed iterations) or ``cosine`` (to 0)."""
    lr: float
    kind: str = "constant"
    warmup: float = 0.0
    steps: tuple[int, ...] = ()
    gamma: float = 0.1

    KINDS = ("constant", "step", "cosine")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise InputError(f"schedule: expected one of {', '.join(self.KINDS)}, got "
                             f"{self.kind!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr: expected a positive number, got {self.lr}")
        if not (math.isfinite(self.warmup) and self.warmup >= 0):
            raise InputError(f"warmup: expected epochs >= 0, got {self.warmup}")
        if any(s < 1 for s in self.steps) or list(self.steps) != sorted(self.steps):
            raise InputError(f"lr steps: expected increasing epochs >= 1, got {self.steps}")

    def rate(self, epoch: int, step: int, steps_per_epoch: int, epochs: int) -> float:
        t = epoch + step / steps_per_epoch                      # epochs done, fractional
        warm = min(1.0, (t + 1 / steps_per_epoch) / self.warmup) if self.warmup else 1.0
        if self.kind == "step":
            return self.lr * warm * self.gamma ** sum(epoch >= s for s in self.steps)
        if self.kind == "cosine":
            return self.lr * warm * 0.5 * (1 + math.cos(math.pi * t / epochs))
        return self.lr * warm


def run_config(config, data, classes=None, input_size: int | None = None, out=None,
               log=print, annotations=None) -> SSDConfig:
    """The config a run trains: ``config`` (a preset or a JSON file) for ``classes``
    (``cat,dog``, a file of names, a list; default: the data set's own when the config's
    do not cover them) at ``input_size`` (the priors derived, see
    ``config.with_input_size``). A config changed so is named after the run's folder."""
    cfg = get_config(config)
    if classes is None:
        found = dataset_classes(data, annotations)
        if found and not set(found) <= set(cfg.class_names):
            classes = found
            log(f"classes from {data}: {', '.join(found)}")
    changed = dataclasses.replace(cfg)
    if classes is not None:
        names = read_class_names(classes) if isinstance(classes, (str, Path)) else classes
        changed = with_classes(changed, names)
    if input_size is not None and input_size != cfg.input_size:
        changed = with_input_size(changed, input_size)
    if changed != cfg:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(out).resolve().name if out else "") \
            or "run"
        changed = dataclasses.replace(changed, name=name[:60])
    return changed


class EagerDetector:
    """The network being trained as a detector for ``evaluate`` (its ``predict``)."""

    def __init__(self, net, cfg: SSDConfig, device):
        self.detector = SSDDetector(net, cfg)
        self.device = device

    @torch.no_grad()
    def predict(self, images) -> list:
        dets, num = self.detector(torch.as_tensor(images).to(self.device))
        return [d[: int(n)].cpu().numpy() for d, n in zip(dets, num)]


LOG_FIELDS = ("epoch", "lr", "loss_l", "loss_c", "images_per_s", "seconds", "val_map",
              "val_map07", "skipped", "skipped_ids")


def _write_log(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, LOG_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in record.items()})
    files.write_text(path, buffer.getvalue(), durable=False)


def train(config, data, out, epochs: int = 10, batch: int = 32, lr: float = 1e-3,
          weights=None, resume=None, seed: int | None = None, classes=None,
          input_size: int | None = None, workers: int = 0, schedule: str = "constant",
          warmup: float | None = None, lr_steps=(), augment: str | None = None,
          amp: bool = False, force: bool = False, image_set: str = "train",
          val_set: str | None = None, val_every: int = 0, keep_every: int = 0,
          threads: int | None = None, annotations=None, skip_bad: bool = False,
          log=print, progress=None, check_progress=None) -> list[dict]:
    """Train an SSD on a data set (a VOC folder or a COCO file, ``ssdonnx.training.data``);
    returns one record per epoch (losses, learning rate, images/s, validation mAP).

    ``config``: a preset or JSON file, adapted by ``classes`` and ``input_size`` (see
    ``run_config``); None when resuming. ``weights``: a checkpoint to start from, loaded
    where it fits (``model.load_matching``: another class count, or a base network
    alone), what was loaded said in the log. ``batch`` is per process. ``schedule``:
    ``constant``, ``step`` (``lr_steps`` epochs) or ``cosine``, after ``warmup`` epochs
    (default 1 for cosine, else 0). ``augment``: ``ssd`` (the SSD paper's, default),
    ``simple`` or ``none``. ``seed`` fixes initialisation, order and augmentation
    (default 0); ``resume`` continues a run with its settings. ``amp``: float16 with
    gradient scaling on CUDA, bfloat16 on the CPU (the loss in float32 either way).
    ``val_every`` > 0: VOC mAP on ``val_set`` (default ``val``) every that many epochs,
    the best kept as ``best.pth``. ``keep_every``: also keep every that many epochs'
    weights. ``threads``: torch's CPU threads (default: torch's). ``annotations``: the
    XML folder where it is not found by its name. Every picture is decoded once when the
    sets are opened (``check_progress(n, total)`` after each): bad ones stop the run
    before its first epoch, all named, or with ``skip_bad`` are left out, counted and
    named in the log and log.csv (``skipped``, ``skipped_ids``). ``progress(n, total,
    epoch, loss_l, loss_c, rate)`` after each step.

    ``out`` must not hold an earlier run's checkpoints unless ``resume`` continues it or
    ``force`` replaces them; it is checked for writing before any work. Checkpoints are
    written whole or not at all.
    """
    if threads is not None and not 1 <= threads <= 1024:
        raise InputError(f"threads: expected 1 to 1024, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with deferred_interrupt() as check_interrupt:
            return _train(config, data, Path(out), epochs, batch, lr, weights, resume, seed,
                          classes, input_size, workers, schedule, warmup, lr_steps, augment,
                          amp, force, image_set, val_set, val_every, keep_every,
                          annotations, skip_bad, check_interrupt, log, progress,
                          check_progress)
    finally:
        torch.set_num_threads(before)


def _train(config, data, out, epochs, batch, lr, weights, resume, seed, classes, input_size,
           workers, schedule, warmup, lr_steps, augment, amp, force, image_set, val_set,
           val_every, keep_every, annotations, skip_bad, check_interrupt, log, progress,
           check_progress) -> list[dict]:
    state = {}
    if resume is not None:
        state = read_resume(resume)
    elif existing_run(out) and not force:
        raise OutputError(f"{out} holds checkpoints of an earlier run "
                          f"({', '.join(p.name for p in existing_run(out)[:3])}); pass --resume "
                          f"{out / 'last.pth'} to continue it, --force to replace it, or "
                          "choose another folder")
    if state.get("config") is not None:
        cfg = SSDConfig.from_dict(json.loads(state["config"]),
                                  source=f"{resume}")
        if config is not None and run_config(config, data, classes, input_size, out,
                                             lambda m: None, annotations) != cfg:
            raise InputError(f"{resume} was trained with another config than {config} "
                             "(with these classes and input size); leave them out to "
                             "continue that run")
    elif config is None:
        raise InputError("a config is needed to start a run (--config), or a run to "
                         "continue (--resume)")
    else:
        cfg = run_config(config, data, classes, input_size, out, log, annotations)
    seed = _resumed(state, "seed", seed, 0)
    augment = _resumed(state, "augment", augment, "ssd")
    if augment not in (*AUGMENTATIONS, "none"):
        raise InputError(f"augment: expected one of {', '.join(AUGMENTATIONS)} or none, "
                         f"got {augment!r}")
    plan = Schedule(lr, schedule, (1.0 if schedule == "cosine" else 0.0) if warmup is None
                    else warmup, tuple(lr_steps))
    if val_every and val_set is None:
        val_set = "val"
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
    augmenter = AUGMENTATIONS[augment](cfg.pixel_mean) if augment != "none" else None
    opening = {"annotations": annotations, "skip_bad": skip_bad,
               "progress": check_progress if rank == 0 else None}
    dataset = VOCDataset.for_config(data, image_set, cfg, seed=seed, augment=augmenter,
                                    **opening)
    validation = VOCDataset.for_config(data, val_set, cfg, keep_difficult=True, **opening) \
        if val_every and rank == 0 else None
    skipped = [i for d in (dataset, validation) if d is not None for i, _ in d.skipped]
    if rank == 0:
        for note in dict.fromkeys(n for d in (dataset, validation) if d is not None
                                  for n in d.notes):
            log(note)
    loader, sampler = make_loader(dataset, batch, seed, world, rank, workers)
    net = build_model(cfg)
    if weights is not None and not state:
        report = load_matching(net, weights)
        if rank == 0:
            log(report.summary())
    net = net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    # float16 needs gradient scaling against underflow; bfloat16 has float32's range.
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    start, best, history = 0, state.get("best_map"), list(state.get("history", []))
    if state:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        start = int(state["epoch"])
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    # The data set checked every annotation when it was opened (and the augmentation
    # keeps boxes valid): no need to read the targets back on every step.
    criterion = MultiBoxLoss(num_classes=cfg.num_classes, variances=cfg.variances,
                             normalize="global" if world > 1 else "batch",
                             validate=device.type == "cpu")
    dbox = default_boxes(cfg).to(device)
    records = []
    if rank == 0:
        log(f"training {cfg.name} ({cfg.network}, {cfg.num_classes - 1} classes, input "
            f"{cfg.input_size}) on {device.type} with {torch.get_num_threads()} threads, "
            f"epochs {start + 1} to {epochs}: seed {seed}, augmentation {augment}, "
            f"schedule {plan.kind}" + (f", mixed precision "
                                       f"{str(amp_dtype).removeprefix('torch.')}" if amp else ""))
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        sums, n_images, t0 = [0.0, 0.0], 0, time.perf_counter()
        for step, (images, targets) in enumerate(loader):
            check_interrupt()
            for group in optimizer.param_groups:
                group["lr"] = plan.rate(epoch, step, len(loader), epochs)
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
            step_l, step_c = float(loss_l.detach()), float(loss_c.detach())
            sums[0] += step_l * len(images)
            sums[1] += step_c * len(images)
            n_images += len(images)
            if progress and rank == 0:
                progress(len(images) * world, total=len(dataset), epoch=epoch + 1,
                         loss_l=step_l, loss_c=step_c,
                         rate=n_images * world / (time.perf_counter() - t0))
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                  "loss_l": sums[0] / max(n_images, 1), "loss_c": sums[1] / max(n_images, 1),
                  "images_per_s": n_images * world / seconds, "seconds": seconds,
                  "skipped": len(skipped), "skipped_ids": ";".join(skipped)}
        last = epoch + 1 == epochs
        if validation is not None and ((epoch + 1) % val_every == 0 or last):
            net.eval()
            result = evaluate(EagerDetector(net, cfg, device), validation, batch)
            net.train()
            record.update(val_map=result.map, val_map07=result.map07)
        records.append(record)
        history.append(record)
        if rank == 0:
            weights_only = {"model": net.state_dict(), "config": cfg.to_json(),
                            "epoch": epoch + 1}
            if "val_map" in record and (best is None or record["val_map"] > best):
                best = record["val_map"]
                save_checkpoint({**weights_only, "map": best}, out / "best.pth")
            if last or (keep_every and (epoch + 1) % keep_every == 0):
                save_checkpoint(weights_only, out / f"{cfg.name}-epoch{epoch + 1}.pth")
            save_checkpoint({**weights_only, "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "seed": seed, "augment": augment,
                             "best_map": best, "history": history}, out / "last.pth")
            _write_log(out / "log.csv", history)
            log(f"epoch {epoch + 1}/{epochs}: loss_l {record['loss_l']:.4f}  "
                f"loss_c {record['loss_c']:.4f}  {record['images_per_s']:.1f} images/s"
                + (f"  val mAP {record['val_map']:.4f} (11-pt {record['val_map07']:.4f})"
                   if "val_map" in record else ""))
    if world > 1:
        dist.barrier()
    return records
