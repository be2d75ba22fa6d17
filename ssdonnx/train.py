"""Training with the seed's recipe: SGD (lr 1e-3, momentum 0.9, weight decay 5e-4), the
batched MultiBoxLoss, gradient values clipped at 2 (the seed code base's train loop).
Runs as one process, or under ``torchrun`` with DistributedDataParallel (gloo on CPU,
nccl on GPU) and the loss normalised by the global number of positives."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .config import get_config
from .data import Augment, VOCDataset, collate
from .loss import MultiBoxLoss
from .model import SSD, load_weights
from .priors import default_boxes

GRAD_CLIP = 2.0   # clip_grad_value_ in the seed code base's training loop


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(config, data, out, epochs: int = 10, batch: int = 32, lr: float = 1e-3,
          weights=None, resume=None, seed: int = 0, classes=None, workers: int = 0,
          schedule: str = "constant", log=print, progress=None) -> list[dict]:
    """Train an SSD on a VOC-layout folder; returns per-epoch mean losses.

    Writes ``<out>/<config>-epoch<N>.pth`` (a plain state_dict, the seed's format) and
    ``<out>/last.pth`` (model, optimizer and epoch, for ``resume``) after every epoch.
    ``batch`` is per process. ``schedule``: ``constant`` (the seed) or ``cosine`` (one
    epoch of warm-up, then cosine decay).
    """
    cfg = get_config(config)
    rank, world = _distributed()
    if torch.cuda.is_available():
        # One GPU per process: torchrun's LOCAL_RANK picks it (the rank on a single node).
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)   # nccl's collectives use the current device
    else:
        device = torch.device("cpu")
    torch.manual_seed(seed)
    classes = classes or cfg.class_names
    dataset = VOCDataset(data, "train", classes, size=cfg.input_size,
                         augment=Augment(seed + rank))
    sampler = torch.utils.data.DistributedSampler(dataset, world, rank, seed=seed) \
        if world > 1 else torch.utils.data.RandomSampler(
            dataset, generator=torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler,
                                         collate_fn=collate, num_workers=workers,
                                         drop_last=len(dataset) >= batch * world)
    net = SSD(cfg)
    if weights is not None:
        load_weights(net, weights)
    net = net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    start = 0
    out = Path(out)
    if resume is not None:
        state = torch.load(resume, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["epoch"])
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    criterion = MultiBoxLoss(num_classes=cfg.num_classes, variances=cfg.variances,
                             normalize="global" if world > 1 else "batch")
    dbox = default_boxes(cfg).to(device)
    steps_total = max(1, epochs * len(loader))
    history = []
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    for epoch in range(start, epochs):
        if world > 1:
            sampler.set_epoch(epoch)
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
            loc, conf = model(images)
            loss_l, loss_c = criterion((loc, conf, dbox), targets)
            optimizer.zero_grad()
            (loss_l + loss_c).backward()
            nn.utils.clip_grad_value_(net.parameters(), GRAD_CLIP)
            optimizer.step()
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
            torch.save(net.state_dict(), out / f"{cfg.name}-epoch{epoch + 1}.pth")
            torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch + 1, "config": cfg.to_json()}, out / "last.pth")
            log(f"epoch {epoch + 1}/{epochs}: loss_l {record['loss_l']:.4f}  "
                f"loss_c {record['loss_c']:.4f}  {record['images_per_s']:.1f} images/s")
    if world > 1:
        dist.barrier()
    return history
