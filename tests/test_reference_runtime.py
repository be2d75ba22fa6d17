"""The graphs run by an independent implementation of the ONNX specification
(onnx.reference) give PyTorch's numbers, as onnxruntime does."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from conftest import SHIPPED, invoke
from ssdonnx.deploy.parity import verify
from ssdonnx.deploy.reference_runtime import GatherElements

pytestmark = pytest.mark.parity


def gather_elements_model(shape, index_shape, axis):
    node = helper.make_node("GatherElements", ["data", "indices"], ["out"], axis=axis)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, shape),
                      helper.make_tensor_value_info("indices", TensorProto.INT64, index_shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, index_shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


# Where the stock operator works: a positive axis with fewer than 64 entries along it.
@pytest.mark.parametrize("shape, index_shape, axis", [
    ((5, 7), (5, 3), 1), ((5, 7), (2, 7), 0), ((3, 4, 6), (3, 4, 2), 2),
    ((3, 4, 6), (3, 2, 6), 1), ((2, 40), (2, 40), 1)])
def test_gather_elements_substitute_equals_the_stock_one(shape, index_shape, axis):
    rng = np.random.default_rng(len(shape) * 10 + axis)
    data = rng.normal(size=shape).astype(np.float32)
    size = shape[axis]
    indices = rng.integers(-size, size, size=index_shape)       # negative ones included
    model = gather_elements_model(shape, index_shape, axis)
    stock = ReferenceEvaluator(model).run(None, {"data": data, "indices": indices})[0]
    ours = ReferenceEvaluator(model, new_ops=[GatherElements]).run(
        None, {"data": data, "indices": indices})[0]
    np.testing.assert_array_equal(ours, stock)
    np.testing.assert_array_equal(ours, np.take_along_axis(data, indices % size, axis))


def test_gather_elements_substitute_takes_more_than_64_along_the_axis():
    data = np.arange(2 * 300, dtype=np.float32).reshape(2, 300)
    indices = np.array([[299, 0, -1], [150, 64, 65]])
    model = gather_elements_model(data.shape, indices.shape, 1)
    with pytest.raises(ValueError):          # numpy.choose: at most 64 choices
        ReferenceEvaluator(model).run(None, {"data": data, "indices": indices})
    out = ReferenceEvaluator(model, new_ops=[GatherElements]).run(
        None, {"data": data, "indices": indices})[0]
    np.testing.assert_array_equal(out, [[299, 0, 299], [450, 364, 365]])
    with pytest.raises(ValueError, match="outside"):
        ReferenceEvaluator(model, new_ops=[GatherElements]).run(
            None, {"data": data, "indices": np.array([[300, 0, 0], [0, 0, 0]])})


@pytest.fixture(scope="module")
def shipped_graphs(tmp_path_factory):
    """The shipped ssd-shapes network, detector and loss (small enough for NumPy)."""
    folder = tmp_path_factory.mktemp("shipped-all")
    result = invoke("export", "all", "--config", "ssd-shapes", "--weights",
                    SHIPPED / "weights.pth", "--output", folder, "--no-verify")
    assert result.exit_code == 0, result.output
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["model", "detector", "loss"])
def test_reference_implementation_agrees_with_pytorch(shipped_graphs, kind):
    weights = SHIPPED / "weights.pth" if kind != "loss" else None
    result = verify(shipped_graphs / f"{kind}.onnx", weights, runtime="reference", batch=2)
    assert result.runtime == "the ONNX reference implementation"
    assert result.passed, result.report()
    cases = {r.case for r in result.rows}
    for special in ({"flat pictures"} if kind != "loss" else {"loc, conf = 0", "no objects"}):
        assert any(c.endswith(special) for c in cases), cases


def test_reference_implementation_runs_the_ssd300_loss(exported):
    result = verify(exported["loss"], runtime="reference")
    assert result.passed, result.report()


@pytest.mark.slow
def test_verify_command_takes_the_reference_runtime(shipped_graphs):
    result = invoke("verify", shipped_graphs / "loss.onnx", "--runtime", "reference",
                    "--batch", "1")
    assert result.exit_code == 0, result.output
    assert "PASS: PyTorch vs the ONNX reference implementation, loss graph" in result.output
    assert onnx.load(str(shipped_graphs / "loss.onnx")).graph.node
