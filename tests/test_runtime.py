import gc
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ssdonnx.deploy.runtime import ProviderError, Session

HAS_CUDA = torch.cuda.is_available() and \
    "CUDAExecutionProvider" in ort.get_available_providers()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and onnxruntime-gpu")


def test_cpu_session(exported):
    s = Session(exported["loss"], "cpu", threads=1)
    assert s.provider == "cpu" and s.session.get_providers() == ["CPUExecutionProvider"]
    assert s.input_names == ["loc", "conf", "targets"]


@pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour without a GPU")
def test_cuda_without_gpu_is_a_clear_error_and_auto_says_cpu(exported):
    with pytest.raises(ProviderError, match="CUDAExecutionProvider"):
        Session(exported["loss"], "cuda")
    s = Session(exported["loss"], "auto")
    assert s.provider == "cpu" and s.note.startswith("auto: using CPU")


def test_missing_inputs_are_named(exported):
    s = Session(exported["loss"], "cpu")
    with pytest.raises(ValueError, match=r"missing inputs \['targets'\]"):
        s.run(loc=np.zeros((1, 8732, 4), np.float32), conf=np.zeros((1, 8732, 21), np.float32))


def loss_inputs(B=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # conf as a transposed view: run_torch must bind a contiguous copy, not the view.
    conf = torch.randn(B, 21, 8732, generator=gen).transpose(1, 2)
    loc = torch.randn(B, 8732, 4, generator=gen)
    targets = torch.tensor([[[0.1, 0.1, 0.4, 0.4, 1.0]], [[0.2, 0.3, 0.5, 0.9, 4.0]]])[:B]
    return dict(loc=loc, conf=conf, targets=targets)


def test_run_torch_binds_tensors_and_returns_tensors(exported):
    # The IOBinding path of CUDA sessions, exercised on the CPU provider.
    s = Session(exported["loss"], "cpu")
    inputs = loss_inputs()
    assert not inputs["conf"].is_contiguous()
    out = s.run_torch(**inputs)
    ref = s.run(**{k: v.numpy() for k, v in inputs.items()})
    assert set(out) == {"loss_l", "loss_c"}
    for name, value in out.items():
        assert isinstance(value, torch.Tensor) and value.device.type == "cpu"
        np.testing.assert_array_equal(value.numpy(), ref[name])


def test_run_torch_outputs_outlive_the_binding(exported):
    s = Session(exported["detector"], "cpu")
    images = torch.rand(2, 3, 300, 300, generator=torch.Generator().manual_seed(1))
    out = s.run_torch(images=images)
    expected = {k: v.clone() for k, v in out.items()}
    gc.collect()
    s.run_torch(images=torch.rand(2, 3, 300, 300))   # reuses freed memory, if any was freed
    for name, value in out.items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


def test_run_torch_refuses_what_it_cannot_bind(exported):
    s = Session(exported["loss"], "cpu")
    inputs = loss_inputs()
    with pytest.raises(ValueError, match=r"loc: dtype torch.float64 cannot be bound"):
        s.run_torch(**{**inputs, "loc": inputs["loc"].double()})
    with pytest.raises(ValueError, match=r"several devices \['cpu', 'meta'\]"):
        s.run_torch(**{**inputs, "loc": inputs["loc"].to("meta")})
    meta = {k: v.to("meta") for k, v in inputs.items()}
    with pytest.raises(ValueError, match="inputs are on meta, the session runs on cpu"):
        s.run_torch(**meta)
    with pytest.raises(ValueError, match=r"missing inputs \['targets'\]"):
        s.run_torch(loc=inputs["loc"], conf=inputs["conf"])


def test_placement_reads_onnxruntime_profile_and_flags_cpu_compute(exported, monkeypatch,
                                                                     tmp_path):
    # The CUDA placement check's machinery, on the CPU provider: everything runs on the
    # CPU there, so every compute node must be reported and only shape arithmetic spared.
    from ssdonnx.devtools.placement import cpu_compute_nodes, format_placement, node_providers

    monkeypatch.chdir(tmp_path)          # a relative path must work, and leave no profile
    rel = Path(os.path.relpath(exported["loss"], tmp_path))
    nodes = node_providers(rel, "cpu")
    assert {n["provider"] for n in nodes} == {"CPUExecutionProvider"}
    flagged = cpu_compute_nodes(rel, "cpu")
    ops = {n["op_type"] for n in flagged}
    assert {"LogSoftmax", "ReduceSum", "CumSum", "ArgMax", "ScatterElements"} <= ops
    spared = [n for n in nodes if n not in flagged]   # Shape, Concat of shapes, ...
    assert spared and all(set(dtype for out in n["outputs"] for dtype in out) == {"int64"}
                          for n in spared)
    report = format_placement(rel, nodes)
    assert f"{len(nodes)} nodes ran, {len(flagged)} compute nodes on the CPU" in report
    assert "CPU compute: " in report and "(LogSoftmax)" in report
    assert list(tmp_path.iterdir()) == []


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["loss", "detector", "model"])
def test_cuda_parity(exported, kind):
    from ssdonnx.deploy.onnxfile import read_info
    from ssdonnx.deploy.parity import check_parity

    s = Session(exported[kind], "cuda")
    assert s.session.get_providers()[0] == "CUDAExecutionProvider"
    rows = check_parity(read_info(exported[kind]), s)
    assert all(r.passed for r in rows), rows


@cuda
@pytest.mark.cuda
def test_cuda_iobinding_keeps_tensors_on_the_gpu(exported):
    s = Session(exported["loss"], "cuda")
    loc = torch.randn(2, 8732, 4, device="cuda")
    conf = torch.randn(2, 8732, 21, device="cuda")
    targets = torch.tensor([[[0.1, 0.1, 0.4, 0.4, 1.0]], [[0.2, 0.3, 0.5, 0.9, 4.0]]],
                           device="cuda")
    out = s.run(loc=loc, conf=conf, targets=targets)
    assert out["loss_l"].is_cuda
    cpu = Session(exported["loss"], "cpu").run(loc=loc.cpu(), conf=conf.cpu(),
                                               targets=targets.cpu())
    np.testing.assert_allclose(out["loss_c"].cpu().numpy(), cpu["loss_c"], rtol=1e-4)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["loss", "detector"])
def test_every_compute_node_runs_on_cuda(exported, kind):
    """onnxruntime's own placement, from session profiling."""
    from ssdonnx.devtools.placement import cpu_compute_nodes

    assert cpu_compute_nodes(exported[kind]) == []
