import json

import numpy as np
import onnx
import pytest
import torch

import ssdonnx
from ssdonnx.deploy.onnxfile import read_info
from ssdonnx.deploy.graphs import LossGraph, build_graph
from ssdonnx.deploy.parity import LOSS_ATOL, LOSS_RTOL, Case, check_parity
from ssdonnx.deploy.runtime import Session
from helpers import random_predictions, random_targets

pytestmark = pytest.mark.parity

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
