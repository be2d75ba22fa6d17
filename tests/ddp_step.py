"""One loss step under torchrun: each process takes its half of a fixed batch, with
MultiBoxLoss(normalize="global"); rank 0 saves the DDP-averaged gradient.

    torchrun --standalone --nproc_per_node 2 tests/ddp_step.py OUT.pt
"""
import sys

import torch
import torch.distributed as dist

import ssdonnx
from helpers import dbox, random_predictions, random_targets


def batch():
    gen = torch.Generator().manual_seed(0)
    # Uneven positives per half, so per-process normalisation would be wrong.
    targets = ssdonnx.pad_targets(random_targets(gen, [1, 2, 7, 5]))
    loc, conf = random_predictions(gen, 4, 8732, 21)
    return loc, conf, targets


def main(out):
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    loc, conf, targets = batch()
    part = slice(rank * 4 // world, (rank + 1) * 4 // world)
    loc_r = loc[part].clone().requires_grad_()
    conf_r = conf[part].clone().requires_grad_()
    loss_l, loss_c = ssdonnx.MultiBoxLoss(normalize="global")((loc_r, conf_r, dbox()),
                                                             targets[part])
    (loss_l + loss_c).backward()
    grads = torch.zeros(*loc.shape[:2], 25)
    grads[part, :, :4] = loc_r.grad
    grads[part, :, 4:] = conf_r.grad
    dist.all_reduce(grads)                 # DDP sums the contributions, then divides by W
    if rank == 0:
        torch.save(grads / world, out)
    # Tear down together: a rank that destroys the group while the other still works in
    # it can abort in gloo's shutdown (seen once in CI: SIGABRT, "terminate called").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
