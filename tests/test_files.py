"""Nothing a user had is lost: checkpoints survive a kill, Ctrl-C and a full disk;
`detect`, `train` and `data shapes` never write over what they did not make; files are
checked for writing before any work."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import invoke
from ssdonnx.deploy.files import atomic_output
from ssdonnx.training.shapes import write_shapes
from ssdonnx.training.train import deferred_interrupt, read_resume

pytestmark = pytest.mark.slow


def assert_input_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.output, result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("shapes") / "tiny", 16, 4, seed=5)


def start(args, cwd, limit_bytes=None):
    """`python -m ssdonnx ARGS` in a child with SIGINT's default disposition (see
    test_cli.run_and_interrupt) and, optionally, a file-size limit (`ulimit -f`)."""
    def setup():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.Popen([sys.executable, "-m", "ssdonnx", *map(str, args)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=setup)


def wait_for(condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def partials(folder):
    return [p.name for p in Path(folder).rglob("*.partial")]


def train_args(data, out, epochs, *extra):
    return ["train", "--config", "ssd-shapes", "--data", data, "--out", out, "--epochs",
            epochs, "--batch", "8", "--augment", "none", *extra]


# --- 1. checkpoints: written whole or not at all ------------------------------------------

@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_or_interrupted_run_keeps_a_checkpoint_to_resume_from(tiny, tmp_path, how):
    out = tmp_path / "run"
    rng = np.random.default_rng(how)
    def saved():
        return (out / "last.pth").stat().st_mtime_ns if (out / "last.pth").exists() else None

    for attempt in range(3):
        before = saved()
        proc = start(train_args(tiny, out, 50, *(["--force"] if attempt == 0 else
                                                 ["--resume", out / "last.pth"])), tmp_path)
        # Training under way in this process (it has saved once), not still starting:
        # a Ctrl-C while Python imports its dependencies can meet their bare excepts.
        wait_for(lambda before=before: saved() not in (None, before))
        time.sleep(rng.uniform(0, 1.5))          # somewhere in an epoch or a save
        proc.send_signal(how)
        _, err = proc.communicate(timeout=120)
        if how == signal.SIGINT:
            assert proc.returncode in (130, -signal.SIGINT) and "Traceback" not in err, err
            assert err.rstrip().endswith("interrupted")
        state = read_resume(out / "last.pth")     # whole, and a resume file
        for checkpoint in out.glob("*-epoch*.pth"):
            torch.load(checkpoint, weights_only=True)
        assert state["epoch"] >= 1
    # The next write of the same file removes what a killed one left beside it.
    (out / ".last.pth.deadbeef.partial").write_bytes(b"left by a kill")
    with atomic_output(out / "last.pth") as tmp:
        tmp.write_bytes((out / "last.pth").read_bytes())
    assert partials(out) == []


def test_ctrl_c_in_training_is_taken_between_steps():
    # Raised inside Python that PyTorch's C++ called (a custom operator's kernel), a
    # KeyboardInterrupt could abort the process (exit -6): training notes a Ctrl-C and
    # raises it where it checks; a second Ctrl-C interrupts at once.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with deferred_interrupt() as check:
        check()                                   # nothing pending: nothing happens
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        with pytest.raises(KeyboardInterrupt):
            check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_full_disk_fails_the_save_and_keeps_the_last_checkpoint(tiny, tmp_path):
    out = tmp_path / "run"
    assert invoke(*train_args(tiny, out, 1)).exit_code == 0
    before = (out / "last.pth").read_bytes()
    # ulimit -f below one checkpoint (6 MB): the next save cannot complete.
    proc = start(train_args(tiny, out, 2, "--resume", out / "last.pth"), tmp_path,
                 limit_bytes=2 << 20)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "File too large" in err.strip().splitlines()[-1]
    assert (out / "last.pth").read_bytes() == before and partials(out) == []
    assert read_resume(out / "last.pth")["epoch"] == 1


# --- 2. detect writes only what it makes, never through a link ----------------------------

def pictures(folder, names=("a", "b")):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(
            folder / f"{name}.png")
    return folder


def test_detect_never_writes_through_a_hard_link_into_its_inputs(shapes_detector, tmp_path):
    photos = pictures(tmp_path / "photos")
    out = tmp_path / "out"
    out.mkdir()
    for f in photos.iterdir():                     # cp -al photos out
        os.link(f, out / f.name)
    originals = {f.name: f.read_bytes() for f in photos.iterdir()}
    assert_input_error(invoke("detect", shapes_detector, photos, "--out", out), "a.png",
                       "--force")
    result = invoke("detect", shapes_detector, photos, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert {f.name: f.read_bytes() for f in photos.iterdir()} == originals
    assert (out / "a.png").stat().st_ino != (photos / "a.png").stat().st_ino


def test_detect_refuses_files_it_did_not_make_and_each_json_is_its_own_run(
        shapes_detector, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.png").write_bytes(b"the user's")
    (out / "detections.json").write_text("the user's")
    first = pictures(tmp_path / "first", ("a", "b"))
    assert_input_error(invoke("detect", shapes_detector, first, "--out", out),
                       "detections.json", "--force")
    assert (out / "detections.json").read_text() == "the user's"
    assert invoke("detect", shapes_detector, first, "--out", out, "--force").exit_code == 0
    second = pictures(tmp_path / "second", ("c",))
    assert invoke("detect", shapes_detector, second, "--out", out, "--force").exit_code == 0
    described = json.loads((out / "detections.json").read_text())
    assert [Path(d["image"]).name for d in described] == ["c.png"]
    assert (out / "keep.png").read_bytes() == b"the user's" and partials(out) == []


# --- 3 and 4. runs and data sets are not replaced; outputs are checked first --------------

def test_train_refuses_an_earlier_run_unless_resumed_or_forced(tiny, tmp_path):
    out = tmp_path / "run"
    assert invoke(*train_args(tiny, out, 1)).exit_code == 0
    stamp = (out / "last.pth").stat().st_mtime_ns
    assert_input_error(invoke(*train_args(tiny, out, 1)), "holds checkpoints of an earlier run",
                       "--resume", "--force")
    assert (out / "last.pth").stat().st_mtime_ns == stamp
    assert invoke(*train_args(tiny, out, 1, "--force")).exit_code == 0


def test_data_shapes_refuses_an_existing_data_set(tmp_path):
    out = write_shapes(tmp_path / "set", 3, 1, seed=1)
    lists = (out / "ImageSets" / "Main" / "train.txt").read_text()
    assert_input_error(invoke("data", "shapes", "--out", out, "--train", "5", "--val", "0"),
                       "already holds a data set", "--force")
    assert (out / "ImageSets" / "Main" / "train.txt").read_text() == lists
    assert invoke("data", "shapes", "--out", out, "--train", "5", "--val", "0",
                  "--force").exit_code == 0


def test_train_checks_its_output_before_any_work(tiny, tmp_path):
    (tmp_path / "a-file").write_text("x")
    started = time.monotonic()
    result = invoke(*train_args(tiny, tmp_path / "a-file" / "run", 1))
    assert_input_error(result, f"cannot create the folder {tmp_path / 'a-file' / 'run'}")
    assert "epoch" not in result.output and time.monotonic() - started < 30


@pytest.mark.parametrize("command", ["detect", "data", "train"])
def test_an_output_under_a_file_is_one_line(shapes_detector, tiny, tmp_path, command):
    (tmp_path / "a-file").write_text("x")
    target = tmp_path / "a-file" / "out"
    args = {"detect": ["detect", shapes_detector, pictures(tmp_path / "p"), "--out", target],
            "data": ["data", "shapes", "--out", target, "--train", "2", "--val", "0"],
            "train": train_args(tiny, target, 1)}[command]
    assert_input_error(invoke(*args), "a-file")


SAVER = """
import sys, torch
from ssdonnx.training.train import save_checkpoint
path, i = sys.argv[1], 0
payload = torch.randn(16 << 20)                      # 64 MB: a save takes a while
while True:
    i += 1
    save_checkpoint({"model": {"w": payload}, "optimizer": {}, "epoch": i}, path)
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_a_save_killed_half_way_leaves_the_previous_file(tmp_path, how):
    path = tmp_path / "last.pth"
    rng = np.random.default_rng(int(how))
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)],
                                stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        wait_for(path.exists)
        time.sleep(rng.uniform(0.05, 0.6))         # mostly inside a save
        proc.send_signal(how)
        proc.wait(timeout=60)
        assert read_resume(path)["epoch"] >= 1
