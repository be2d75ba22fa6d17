import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import ssdonnx
from ssdonnx.config import with_classes
from ssdonnx.deploy.onnxfile import read_info
from ssdonnx.deploy.graphs import LossGraph, build_graph
from ssdonnx.deploy.parity import LOSS_ATOL, LOSS_RTOL, Case, check_parity
from ssdonnx.deploy.runtime import Session
from helpers import random_predictions, random_targets

pytestmark = pytest.mark.parity
ROOT = Path(__file__).resolve().parent.parent

# Nodes that would force work off CUDA or make the graph data-dependent.
FORBIDDEN = {"NonZero", "SoftmaxCrossEntropyLoss", "Loop", "If"}


def op_types(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_export_all_verified_every_graph(exported):
    out = exported["output"]
    assert out.count("PASS: PyTorch vs onnxruntime (cpu)") == 3
    assert "FAIL" not in out
    assert sorted(p.name for p in exported["folder"].iterdir()) == \
        ["detector.onnx", "loss.onnx", "model.onnx"]          # no .data sidecar


@pytest.mark.parametrize("kind", ["loss", "detector"])
def test_graphs_have_no_host_bound_nodes(exported, kind):
    assert not (op_types(exported[kind]) & FORBIDDEN)


def test_detector_uses_onnx_nms(exported):
    assert "NonMaxSuppression" in op_types(exported["detector"])


def test_metadata_rebuilds_the_reference(exported):
    info = read_info(exported["detector"])
    assert info.kind == "detector" and info.config == ssdonnx.get_config("ssd300-voc")
    assert info.version == ssdonnx.__version__ and info.opset == 18
    assert info.thresholds == {"conf_thresh": 0.01, "top_k": 200, "nms_thresh": 0.45,
                               "max_detections": 200}
    assert read_info(exported["loss"]).thresholds == {"jaccard_thresh": 0.5, "neg_pos": 3}
    meta = {p.key: p.value for p in onnx.load(str(exported["model"])).metadata_props}
    assert json.loads(meta["ssdonnx.config"])["num_classes"] == 21


def test_dynamic_axes(exported):
    model = onnx.load(str(exported["loss"]))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in model.graph.input}
    assert isinstance(dims["targets"][0], str) and isinstance(dims["targets"][1], str)
    assert dims["loc"][1:] == [8732, 4] and dims["conf"][1:] == [8732, 21]


@pytest.mark.parametrize("counts", [[0], [1], [4, 0, 2, 7, 1], [40, 3], [0, 0, 0]])
def test_exported_loss_matches_pytorch_on_other_batches(exported, counts):
    sess = Session(exported["loss"], "cpu")
    gen = torch.Generator().manual_seed(len(counts) * 7 + sum(counts))
    targets = ssdonnx.pad_targets(random_targets(gen, counts))
    loc, conf = random_predictions(gen, len(counts), 8732, 21)
    ref = LossGraph(ssdonnx.get_config("ssd300-voc"))(loc, conf, targets)
    out = sess.run(loc=loc, conf=conf, targets=targets)
    np.testing.assert_allclose(out["loss_l"], ref[0].numpy(), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    np.testing.assert_allclose(out["loss_c"], ref[1].numpy(), rtol=LOSS_RTOL, atol=LOSS_ATOL)
    assert np.isfinite(out["loss_l"]) and np.isfinite(out["loss_c"])


def test_exported_detector_matches_eager_on_batch_of_four(exported):
    info = read_info(exported["detector"])
    rows = check_parity(info, Session(exported["detector"], "cpu"), cases=[Case(4)], seed=9)
    assert all(r.passed for r in rows), rows


def test_export_refuses_to_overwrite_and_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "loss.onnx"
    out.write_bytes(b"precious")
    with pytest.raises(ssdonnx.OutputError, match="pass --force"):
        ssdonnx.export("loss", out, "ssd300-voc")
    assert out.read_bytes() == b"precious"

    def broken_save(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(onnx, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ssdonnx.export("loss", out, "ssd300-voc", force=True)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.onnx"]


def test_export_with_a_checkpoint(tmp_path):
    cfg = ssdonnx.get_config("ssd300-voc")
    net = build_graph("model", cfg)
    torch.manual_seed(3)
    net.reset_parameters()
    weights = tmp_path / "w.pth"
    torch.save(net.state_dict(), weights)
    path = ssdonnx.export("model", tmp_path / "model.onnx", cfg, weights, verify_file=False).path
    info = read_info(path)
    assert info.weights.startswith("sha256:")
    sess = Session(path, "cpu")
    assert all(r.passed for r in check_parity(info, sess, weights, cases=[Case(2)]))
    with pytest.raises(ValueError, match="exported from a checkpoint; pass the same"):
        check_parity(info, sess, None)


def test_export_from_python_takes_a_trained_checkpoints_config(tmp_path):
    # A checkpoint of `ssdonnx train` carries its config: the library's export needs no
    # config for it, as the command line does not (ssd300-voc would not fit it).
    cfg = with_classes(ssdonnx.get_config("ssd-shapes"), ["cat", "dog"])
    net = ssdonnx.build_model(cfg)
    weights = tmp_path / "run-epoch1.pth"
    torch.save({"model": net.state_dict(), "config": cfg.to_json(), "epoch": 1}, weights)
    done = ssdonnx.export("detector", tmp_path / "detector.onnx", weights=weights)
    assert done.config == cfg and done.check.passed
    assert read_info(done.path).config.class_names == ("cat", "dog")
    # The preset it was trained from names the same network (its classes are the run's).
    same = ssdonnx.export("detector", tmp_path / "same.onnx", "ssd-shapes", weights,
                          verify_file=False)
    assert same.config == cfg
    with pytest.raises(ssdonnx.CheckpointError, match="leave --config out"):
        ssdonnx.export("detector", tmp_path / "other.onnx", "ssd300-voc", weights)
    assert not (tmp_path / "other.onnx").exists()


def small_constants(path) -> dict[float, set[str]]:
    """Float constants under 1e-3 (not 0) in a graph, and the op types that take them."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    takers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            takers.setdefault(name, set()).add(node.op_type)
    found: dict[float, set[str]] = {}
    values = [(i.name, numpy_helper.to_array(i)) for i in model.graph.initializer]
    values += [(n.output[0], numpy_helper.to_array(a.t)) for n in model.graph.node
               if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    for name, array in values:
        if array.dtype.kind == "f" and array.size <= 16:
            for v in array.ravel():
                if v != 0 and abs(v) < 1e-3:
                    found.setdefault(float(np.float32(v)), set()).update(takers.get(name, ()))
    return found


def test_the_graphs_guards_are_the_known_ones(exported):
    # Every tiny constant is a guard that some parity case reaches: L2Norm's lower bound
    # on the norm (flat pictures: all-zero features), boxes.ENCODE_MIN_SIZE (degenerate
    # boxes, tests/test_checks.py) and the smallest normal float below which the hard
    # negatives' bisection counts a mining loss as 0 (every batch: positives mine 0). A
    # new one needs its case; an Add of one is the kind the exporter's optimizer folds
    # away (norm + 1e-10 became norm).
    from ssdonnx.boxes import ENCODE_MIN_SIZE

    eps = float(np.float32(1e-10))
    assert small_constants(exported["model"]) == {eps: {"Clip"}}
    assert small_constants(exported["detector"]) == {eps: {"Clip"}}
    assert small_constants(exported["loss"]) == {float(np.float32(ENCODE_MIN_SIZE)): {"Where"},
                                                 float(np.float32(2.0 ** -126)): {"Where"}}


def test_exported_network_is_finite_and_equal_on_flat_pictures(exported):
    # The seeded SSD300 has zero biases, so a picture of the mean colour gives all-zero
    # features at conv4_3: PyTorch's L2Norm divides 0 by its epsilon, and so must ONNX.
    from ssdonnx.deploy.parity import NETWORK_ATOL, NETWORK_RTOL, flat_pictures

    cfg = ssdonnx.get_config("ssd300-voc")
    images = flat_pictures(4, cfg)
    out = Session(exported["model"], "cpu").run(images=images)
    with torch.no_grad():
        ref = build_graph("model", cfg)(images)
    for name, r in zip(("loc", "conf"), ref):
        assert np.isfinite(out[name]).all(), name
        np.testing.assert_allclose(out[name], r.numpy(), rtol=NETWORK_RTOL, atol=NETWORK_ATOL)


def test_the_exporter_folds_an_added_epsilon(tmp_path):
    # Why L2Norm divides by max(norm, eps): written as the seed writes it, norm + eps is
    # exported as norm, and all-zero features give 0/0.
    from ssdonnx.deploy.graphs import to_onnx

    class SeedNorm(torch.nn.Module):
        def forward(self, x):
            return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)

    x = torch.zeros(1, 4, 3, 3)
    onnx.save(to_onnx(SeedNorm(), {"x": x}, ["y"], {"x": {}}), tmp_path / "norm.onnx")
    (y,) = Session(tmp_path / "norm.onnx", "cpu").session.run(None, {"x": x.numpy()})
    assert torch.isfinite(SeedNorm()(x)).all() and np.isnan(y).all()


def test_verify_takes_pictures_too(shapes_detector):
    samples = ROOT / "models" / "ssd-shapes" / "samples"
    result = ssdonnx.verify(shapes_detector, ROOT / "models" / "ssd-shapes" / "weights.pth",
                            "cpu", data=samples)
    assert result.passed, result.report()
    assert any(r.case.endswith("pictures of samples") for r in result.rows)
