import json

import numpy as np
import onnx
import pytest
import torch

import ssdonnx
from conftest import invoke
from helpers import random_predictions, random_targets


def assert_input_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.output, result.output


def test_verify_passes_and_prints_the_table(exported):
    result = invoke("verify", exported["detector"], "--provider", "cpu", "--batch", "2",
                    "--seed", "4")
    assert result.exit_code == 0, result.output
    assert "detections" in result.output and "PASS: PyTorch vs onnxruntime (cpu)" in result.output


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
                 "CPUExecutionProvider", "jaccard_thresh=0.5"):
        assert text in result.output


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


@pytest.mark.parametrize("per_image", [False, True])
def test_loss_command(exported, tmp_path, per_image):
    ref = write_batch(tmp_path / "batch.npz", [3, 0, 5], per_image)
    result = invoke("loss", exported["loss"], "--inputs", tmp_path / "batch.npz",
                    "--provider", "cpu", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["batch"] == 3 and out["provider"] == "cpu"
    np.testing.assert_allclose(out["loss_l"], float(ref[0]), rtol=1e-4)
    np.testing.assert_allclose(out["loss_c"], float(ref[1]), rtol=1e-4)
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
                       "loc: expected shape [B, P, 4] with size 8732")
    targets = np.array([[[0.5, 0.1, 0.4, 0.3, 2.0]]], np.float32)       # x2 <= x1
    np.savez(tmp_path / "box.npz", loc=np.zeros((1, 8732, 4), np.float32),
             conf=np.zeros((1, 8732, 21), np.float32), targets=targets)
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "box.npz"),
                       "image 0, row 0: x2 <= x1")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "junk.npz"),
                       "not a readable .npz")


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
                              tmp_path / "x.onnx"), "opset >= 18")
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
    assert ssdonnx.export.read_info(out).kind == "loss"
