
import numpy as np
import onnxruntime as ort
import pytest
import torch

from ssdonnx.runtime import ProviderError, Session

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


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["loss", "detector", "model"])
def test_cuda_parity(exported, kind):
    from ssdonnx.export import read_info
    from ssdonnx.parity import check_parity

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
def test_every_compute_node_runs_on_cuda(exported, kind, tmp_path):
    """onnxruntime's own placement, from session profiling."""
    from ssdonnx.placement import cpu_compute_nodes

    assert cpu_compute_nodes(exported[kind]) == []
