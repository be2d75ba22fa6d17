"""Where default boxes tie on IoU with a truth, the classic match follows float32
rounding: how much that moves the loss, and whether the runtimes agree with PyTorch.

    python tools/ties.py [IMAGES]        (default 200)

Per image of a random batch (1 to 5 objects each, random logits): the loss with the
truths moved by one ulp (numpy.nextafter, away from 0), against the loss as given; then
onnxruntime's and the ONNX reference implementation's loss graph against PyTorch.
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import ssdonnx
from ssdonnx.deploy.parity import LOSS_ATOL, LOSS_RTOL
from ssdonnx.deploy.reference_runtime import ReferenceSession


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    targets = []
    for _ in range(n):
        k = rng.integers(1, 6)
        size = rng.uniform(0.02, 0.6, (k, 2))
        x1y1 = rng.uniform(0, 1, (k, 2)) * (1 - size)
        labels = rng.integers(0, 20, (k, 1))
        targets.append(np.concatenate([x1y1, x1y1 + size, labels], 1).astype(np.float32))
    loc = rng.normal(size=(n, 8732, 4)).astype(np.float32)
    conf = (rng.normal(size=(n, 8732, 21)) * 2).astype(np.float32)
    return loc, conf, targets


def main(n=200):
    cfg = ssdonnx.get_config("ssd300-voc")
    dbox = ssdonnx.default_boxes(cfg)
    criterion = ssdonnx.MultiBoxLoss()
    loc, conf, targets = batch(n)

    def losses(run, moved=False):
        out = []
        for i, t in enumerate(targets):
            t = t.copy()
            if moved:
                t[:, :4] = np.nextafter(t[:, :4], np.float32(2))
            padded = ssdonnx.pad_targets([torch.from_numpy(t)])
            out.append(sum(float(v) for v in run(torch.from_numpy(loc[i:i + 1]),
                                                 torch.from_numpy(conf[i:i + 1]), padded)))
        return np.array(out)

    def eager(lo, co, t):
        return criterion((lo, co, dbox), t)

    def report(name, got, ref):
        differ = ~np.isclose(got, ref, rtol=LOSS_RTOL, atol=LOSS_ATOL)
        print(f"{name}: {differ.sum()} of {n} images beyond the parity tolerance "
              f"(rtol {LOSS_RTOL:g}, atol {LOSS_ATOL:g}); largest relative difference "
              f"{np.max(np.abs(got - ref) / np.abs(ref)):.2e}")

    ref = losses(eager)
    report("PyTorch, truths moved by one ulp, vs as given", losses(eager, moved=True), ref)
    with tempfile.TemporaryDirectory() as tmp:
        path = ssdonnx.export("loss", Path(tmp) / "loss.onnx", cfg, verify_file=False).path
        for name, sess in (("onnxruntime (cpu)", ssdonnx.session(path, "cpu")),
                           ("the ONNX reference implementation", ReferenceSession(path))):
            def run(lo, co, t, sess=sess):
                return sess.run(loc=lo, conf=co, targets=t).values()
            report(f"{name} vs PyTorch", losses(run), ref)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
