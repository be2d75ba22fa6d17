import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import ssdonnx
from conftest import invoke
from helpers import random_predictions, random_targets
from ssdonnx.deploy.parity import LOSS_ATOL, LOSS_RTOL


def assert_input_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.output, result.output


def table_rows(output):
    """The parity table's rows as lists of cells (split on runs of 2+ spaces)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("case "))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip() or line.startswith(("PASS", "FAIL")):
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


@pytest.mark.parity
def test_verify_passes_and_prints_the_table(exported):
    result = invoke("verify", exported["detector"], "--provider", "cpu", "--batch", "2",
                    "--seed", "4")
    assert result.exit_code == 0, result.output
    assert "detections" in result.output and "PASS: PyTorch vs onnxruntime (cpu)" in result.output
    rows = table_rows(result.output)
    # Every case says what differs between the cases (here the seed), so that two rows
    # of one output never carry the same label.
    detections = [row[0] for row in rows if row[1] == "detections"]
    assert detections == ["B=2, seed 4", "B=2, flat pictures"]
    for row in rows:                       # a PASS row's error is within its bound
        assert row[-1].startswith("PASS") and float(row[3]) <= 1   # or "PASS (N rows: NMS ties)"


def test_parity_rows_report_the_error_against_its_bound():
    from ssdonnx.deploy.parity import compare_arrays, format_table
    # |err| 9e-5 at |ref| 1e-4: 0.9 of the bound 1e-4 + 1e-3 * 1e-4, though 90% relative.
    near = compare_arrays("c", "x", [1e-4, 5.0], [1.9e-4, 5.0], 1e-3, 1e-4)
    assert near.passed and 0.89 < near.worst < 0.91
    far = compare_arrays("c", "x", [1e-4, 5.0], [1e-4, 5.01], 1e-3, 1e-4)
    assert not far.passed and far.worst > 1 and far.mismatched == 1
    table = format_table([near, far])
    assert "err/bound" in table and "0.0001 + 0.001 * |ref|" in table
    assert "FAIL (1/2 differ)" in table


@pytest.mark.slow
@pytest.mark.parity
def test_verify_fails_with_exit_1_when_the_graph_differs(exported, tmp_path):
    model = onnx.load(str(exported["model"]))
    for init in model.graph.initializer:
        if init.name == "conf.1.weight":
            arr = onnx.numpy_helper.to_array(init) * 1.5
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
            break
    else:
        pytest.fail("no conf.1.weight initializer")
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    result = invoke("verify", tampered, "--provider", "cpu")
    assert result.exit_code == 1
    assert "FAIL" in result.output and "conf" in result.output


def test_info(exported):
    result = invoke("info", exported["loss"])
    assert result.exit_code == 0, result.output
    for text in ("kind:       loss", "ssd300-voc", "opset:      18", "targets", "loss_l",
                 "jaccard_thresh=0.5", "weights:    none (a loss graph has no parameters)"):
        assert text in result.output
    assert "weights:    seed:0" in invoke("info", exported["model"]).output


def test_info_says_which_providers_really_load(exported):
    import onnxruntime as ort

    output = invoke("info", exported["detector"]).output
    lines = {line.split()[0]: line for line in output.splitlines()
             if line.strip().endswith("loads") or "cannot load:" in line}
    assert lines["CPUExecutionProvider"].strip().endswith("loads")
    assert set(lines) == set(ort.get_available_providers())
    if "CUDAExecutionProvider" in lines and not torch.cuda.is_available():
        # onnxruntime-gpu without the CUDA libraries: which one is missing, in a few words
        assert re.search(r"cannot load: lib\S+\.so\S* not found",
                         lines["CUDAExecutionProvider"]), lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_provider_error_is_one_line_naming_what_is_missing(exported):
    import onnxruntime as ort

    proc = subprocess.run([sys.executable, "-m", "ssdonnx", "verify", str(exported["loss"]),
                           "--provider", "cuda"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: "), proc.stderr
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert re.search(r"CUDAExecutionProvider cannot load: lib\S+ not found", proc.stderr)
    else:
        assert "install onnxruntime-gpu" in proc.stderr


def write_batch(path, counts, per_image=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    targets = random_targets(gen, counts)
    loc, conf = random_predictions(gen, len(counts), 8732, 21)
    arrays = {"loc": loc.numpy(), "conf": conf.numpy()}
    if per_image:
        arrays.update({f"targets_{i}": t.numpy() for i, t in enumerate(targets)})
    else:
        arrays["targets"] = ssdonnx.pad_targets(targets).numpy()
    np.savez(path, **arrays)
    return ssdonnx.MultiBoxLoss()((loc, conf, ssdonnx.default_boxes(
        ssdonnx.get_config("ssd300-voc"))), targets)


@pytest.mark.parity
@pytest.mark.parametrize("per_image", [False, True])
def test_loss_command(exported, tmp_path, per_image):
    ref = write_batch(tmp_path / "batch.npz", [3, 0, 5], per_image)
    result = invoke("loss", exported["loss"], "--inputs", tmp_path / "batch.npz",
                    "--provider", "cpu", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["batch"] == 3 and out["provider"] == "cpu"
    np.testing.assert_allclose(out["loss_l"], float(ref[0]), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    np.testing.assert_allclose(out["loss_c"], float(ref[1]), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    text = invoke("loss", exported["loss"], "--inputs", tmp_path / "batch.npz",
                  "--provider", "cpu")
    assert "loss_l = " in text.output and "loss_c = " in text.output


def test_loss_command_bad_npz(exported, tmp_path):
    np.savez(tmp_path / "nokeys.npz", loc=np.zeros((1, 8732, 4), np.float32))
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "nokeys.npz"),
                       "missing arrays", "conf", "targets")
    np.savez(tmp_path / "shape.npz", loc=np.zeros((1, 100, 4), np.float32),
             conf=np.zeros((1, 100, 21), np.float32), targets=np.zeros((1, 0, 5), np.float32))
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "shape.npz"),
                       "loc has shape [1, 100, 4]; the graph (ssd300-voc) takes [B, 8732, 4]")
    targets = np.array([[[0.5, 0.1, 0.4, 0.3, 2.0]]], np.float32)       # x2 <= x1
    np.savez(tmp_path / "box.npz", loc=np.zeros((1, 8732, 4), np.float32),
             conf=np.zeros((1, 8732, 21), np.float32), targets=targets)
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "box.npz"),
                       "image 0, row 0: x2 <= x1")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "junk.npz"),
                       "not a readable .npz")
    # Integer arrays are refused, as the Python API refuses integer tensors.
    np.savez(tmp_path / "int.npz", loc=np.zeros((1, 8732, 4), np.int64),
             conf=np.zeros((1, 8732, 21), np.float32), targets=np.zeros((1, 0, 5), np.float32))
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "int.npz"),
                       "loc: expected floating-point values, got int64")
    np.savez(tmp_path / "intt.npz", loc=np.zeros((1, 8732, 4), np.float32),
             conf=np.zeros((1, 8732, 21), np.float32),
             targets_0=np.array([[1, 1, 5, 5, 2]], np.int32))
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "intt.npz"),
                       "targets_0: expected floating-point values, got int32")


def test_wrong_files_for_commands(exported, tmp_path):
    assert_input_error(invoke("loss", exported["detector"], "--inputs", "x.npz"),
                       "is a detector graph; this needs a loss graph")
    (tmp_path / "text.onnx").write_text("not a model")
    for cmd in (["verify"], ["info"]):
        assert_input_error(invoke(*cmd, tmp_path / "text.onnx"), "is not an ONNX")
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    assert_input_error(invoke("verify", tmp_path / "plain.onnx"), "without ssdonnx metadata")
    assert_input_error(invoke("info", tmp_path / "missing.onnx"), "no such file")
    assert_input_error(invoke("verify", exported["loss"], "--weights", exported["loss"]),
                       "loss graph: it has no weights")
    assert_input_error(invoke("verify", exported["model"], "--weights", exported["loss"]),
                       "exported without a checkpoint")


def test_export_errors(exported, tmp_path):
    assert_input_error(invoke("export", "loss", "--output", exported["loss"]), "exists",
                       "--force")
    assert_input_error(invoke("export", "loss", "--config", "ssd999", "--output",
                              tmp_path / "x.onnx"), "unknown config 'ssd999'")
    assert_input_error(invoke("export", "loss", "--opset", "13", "--output",
                              tmp_path / "x.onnx"), "opset: 13 is not supported",
                       "ssdonnx writes opset 18")
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    assert_input_error(invoke("export", "model", "--weights", tmp_path / "bad.pth",
                              "--output", tmp_path / "m.onnx"), "bad.pth",
                       "truncated, corrupt or not a PyTorch checkpoint")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "x.onnx").exists()
    assert_input_error(invoke("export", "loss", "--config", tmp_path / "none.json",
                              "--output", tmp_path / "x.onnx"), "does not exist")


def test_export_single_kind_with_force(tmp_path):
    out = tmp_path / "loss.onnx"
    out.write_bytes(b"old")
    result = invoke("export", "loss", "--output", out, "--force")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "PASS" in result.output
    assert ssdonnx.read_info(out).kind == "loss"


# --- writing files: where, with which permissions, and never half-way -------------------

def export_loss(output, *args):
    """The ssd-shapes loss graph: small, so that exporting it takes a few seconds."""
    return invoke("export", "loss", "--config", "ssd-shapes", "--output", output, *args)


def partials(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_exported_files_get_the_permissions_of_any_new_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        assert export_loss(tmp_path / "loss.onnx", "--no-verify").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "loss.onnx").stat().st_mode) == 0o666 & ~umask


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can create files in: chmod for a normal user; for root, who
    ignores modes, the immutable attribute (chattr +i)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ["chmod", "755", str(folder)]
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        undo = ["chattr", "-i", str(folder)]
    else:
        pytest.skip("running as root without chattr: no folder is read-only to root")
    try:
        (folder / "probe").touch()
    except OSError:
        yield folder
    else:
        pytest.skip(f"{folder} is still writable")
    finally:
        subprocess.run(undo, check=True)


def test_unwritable_output_fails_before_any_work(read_only_dir, tmp_path, monkeypatch):
    import ssdonnx.deploy.graphs

    def no_work(*args, **kwargs):
        raise AssertionError("the export started before the destination was checked")
    monkeypatch.setattr(ssdonnx.deploy.graphs, "graph_proto", no_work)
    assert_input_error(export_loss(read_only_dir / "loss.onnx"),
                       f"cannot write in {read_only_dir}")
    assert_input_error(export_loss(read_only_dir / "sub" / "loss.onnx"),
                       f"cannot create the folder {read_only_dir / 'sub'}")
    (tmp_path / "a-file").write_text("x")
    assert_input_error(export_loss(tmp_path / "a-file" / "loss.onnx"),
                       f"cannot create the folder {tmp_path / 'a-file'}")
    assert_input_error(invoke("export", "all", "--config", "ssd-shapes", "--output",
                              read_only_dir), f"cannot write in {read_only_dir}")


def test_output_must_be_a_file_for_one_kind_and_a_folder_for_all(tmp_path):
    for extra in ([], ["--force"]):
        assert_input_error(export_loss(tmp_path, *extra), f"--output {tmp_path} is a folder",
                           "for `export loss` it is the file to write",
                           str(tmp_path / "loss.onnx"))
    (tmp_path / "x.onnx").write_text("old")
    assert_input_error(invoke("export", "all", "--output", tmp_path / "x.onnx"),
                       "is a file; for `export all` it is the folder")


def failing_check(path, weights, provider, name, log):
    """A verification that fails, as a graph that differs from PyTorch would."""
    from ssdonnx.deploy.onnxfile import read_info
    from ssdonnx.deploy.parity import ParityRow, Verification

    row = ParityRow("B=1", "loss_c", 1.0, 2.0, "1e-05 + 0.0001 * |ref|", 1, 1)
    return Verification(name, read_info(path), "onnxruntime (cpu)", [row])


def test_a_file_that_fails_its_check_replaces_nothing(tmp_path, monkeypatch):
    import ssdonnx.deploy.export

    out = tmp_path / "loss.onnx"
    out.write_bytes(b"previous version")
    monkeypatch.setattr(ssdonnx.deploy.export, "verify", failing_check)
    result = export_loss(out, "--force")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "parity check failed" in result.output and "not written" in result.output
    assert out.read_bytes() == b"previous version" and partials(tmp_path) == []


def test_ctrl_c_during_the_check_keeps_the_old_file(tmp_path, monkeypatch):
    import ssdonnx.deploy.export

    out = tmp_path / "loss.onnx"
    out.write_bytes(b"previous version")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(ssdonnx.deploy.export, "verify", interrupted)
    result = export_loss(out, "--force")
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert result.output.rstrip().endswith("interrupted")
    assert out.read_bytes() == b"previous version" and partials(tmp_path) == []


def run_and_interrupt(args, after, cwd):
    """Start `python -m ssdonnx ARGS`, send SIGINT once ``after(stderr so far, pid)`` holds.

    The child gets SIGINT's default disposition: a test run started in the background by a
    shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    proc = subprocess.Popen([sys.executable, "-m", "ssdonnx", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    os.set_blocking(proc.stderr.fileno(), False)
    deadline = time.monotonic() + 120
    while not after(seen.decode(), proc.pid) and time.monotonic() < deadline:
        seen += proc.stderr.read() or b""
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), seen.decode() + (err or b"").decode()


@pytest.mark.slow
@pytest.mark.parametrize("when", ["importing", "exporting"])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, when):
    out = tmp_path / "loss.onnx"
    out.write_bytes(b"previous version")
    if when == "importing":     # torch is imported inside the command, for seconds
        def ready(err, pid):
            maps = Path(f"/proc/{pid}/maps")
            return "libtorch" in maps.read_text() if maps.exists() else False
    else:
        def ready(err, pid):
            return "exporting loss" in err
    code, stdout, stderr = run_and_interrupt(
        ["export", "loss", "--config", "ssd-shapes", "--output", out, "--force"], ready,
        tmp_path)
    # The shell reports 130 either way. ssdonnx exits with 130 (always, from the
    # `ssdonnx` script); under `python -m` CPython sometimes re-raises SIGINT at the very
    # end after "interrupted" and the cleanup, seen here as -2 (the shell: 128 + 2).
    assert code in (130, -signal.SIGINT), (stdout, stderr)
    assert "Traceback" not in stderr and stderr.rstrip().endswith("interrupted")
    assert out.read_bytes() == b"previous version" and partials(tmp_path) == []


def test_help_and_version_import_neither_torch_nor_onnxruntime():
    probe = ("import sys\nfrom ssdonnx.app.cli import main\n"
             "for args in (['--help'], ['--version'], ['export', '--help']):\n"
             "    try:\n        main(args)\n    except SystemExit:\n        pass\n"
             "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'onnxscript', 'numpy')"
             " if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
