"""MultiBoxLoss(normalize="global"): with DDP's gradient averaging over W processes, the
gradient equals single-process training on the whole batch (2 CPU processes, gloo)."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ssdonnx
from helpers import dbox, random_predictions, random_targets

WORLD = 2


def batch():
    gen = torch.Generator().manual_seed(0)
    # Uneven positives per half, so per-process normalisation would be wrong.
    targets = ssdonnx.pad_targets(random_targets(gen, [1, 2, 7, 5]))
    loc, conf = random_predictions(gen, 4, 8732, 21)
    return loc, conf, targets


def worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    loc, conf, targets = batch()
    half = slice(2 * rank, 2 * rank + 2)
    loc_r = loc[half].clone().requires_grad_()
    conf_r = conf[half].clone().requires_grad_()
    loss_l, loss_c = ssdonnx.MultiBoxLoss(normalize="global")((loc_r, conf_r, dbox()),
                                                             targets[half])
    (loss_l + loss_c).backward()
    grads = torch.zeros(2, *loc.shape[:2], 25)
    grads[0, half, :, :4] = loc_r.grad
    grads[0, half, :, 4:] = conf_r.grad
    dist.all_reduce(grads)                 # what DDP does, then divides by W
    if rank == 0:
        torch.save(grads[0] / WORLD, os.path.join(out_dir, "grad.pt"))
    dist.destroy_process_group()


def test_global_normalisation_matches_single_process(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    ddp = torch.load(tmp_path / "grad.pt")

    loc, conf, targets = batch()
    loc.requires_grad_()
    conf.requires_grad_()
    loss_l, loss_c = ssdonnx.MultiBoxLoss()((loc, conf, dbox()), targets)
    (loss_l + loss_c).backward()
    torch.testing.assert_close(ddp[..., :4], loc.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(ddp[..., 4:], conf.grad, rtol=1e-5, atol=1e-8)
