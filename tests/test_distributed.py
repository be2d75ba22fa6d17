"""MultiBoxLoss(normalize="global"): with DDP's gradient averaging over W processes, the
gradient equals single-process training on the whole batch (torchrun, 2 CPU processes,
gloo)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ssdonnx
from ddp_step import batch
from helpers import dbox

pytestmark = pytest.mark.slow

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")
def test_global_normalisation_matches_single_process(tmp_path):
    here = Path(__file__).resolve().parent
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    def ddp_step():
        return subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2",
                               str(here / "ddp_step.py"), str(tmp_path / "grad.pt")],
                              capture_output=True, text=True, env=env, timeout=300)
    proc = ddp_step()
    if proc.returncode != 0 and "(SIGABRT)" in proc.stderr:
        # A rank aborted inside gloo ("terminate called without an active exception"):
        # seen in 2 of 4 full CI runs on a 2-core machine, never with this test run alone
        # (10 runs). Not what the test is about: one retry; a second abort still fails.
        proc = ddp_step()
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = torch.load(tmp_path / "grad.pt")

    loc, conf, targets = batch()
    loc.requires_grad_()
    conf.requires_grad_()
    loss_l, loss_c = ssdonnx.MultiBoxLoss()((loc, conf, dbox()), targets)
    (loss_l + loss_c).backward()
    torch.testing.assert_close(ddp[..., :4], loc.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(ddp[..., 4:], conf.grad, rtol=1e-5, atol=1e-8)
