"""The CUDA claim without a GPU: every compute node of the exported graphs has a kernel in
onnxruntime-gpu's CUDA registry, and its partitioner puts every compute node on
CUDAExecutionProvider (ssdonnx.devtools.placement.simulate_cuda_placement, on stand-in CUDA
libraries).
Negative controls show that the check fails where it should."""

import shutil
from collections import Counter

import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper

from conftest import invoke
from ssdonnx.devtools.placement import (CPU, CUDA, _is_shape_work, format_simulated,
                               parse_partitioner_log, simulate_cuda_placement)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (shutil.which("gcc") and shutil.which("readelf")),
    reason="the stand-in CUDA libraries are built with gcc and readelf (binutils)")]


@pytest.fixture(scope="session")
def standin_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda-standin")


@pytest.fixture(scope="session")
def simulated(exported, shapes_detector, standin_cache, tmp_path_factory):
    graphs = {f"ssd300-voc {k}": exported[k] for k in ("loss", "detector", "model")}
    graphs["ssd-shapes detector"] = shapes_detector
    mb2 = tmp_path_factory.mktemp("mb2") / "detector.onnx"
    result = invoke("export", "detector", "--config", "mb2-ssd-lite", "--output", mb2,
                    "--no-verify")
    assert result.exit_code == 0, result.output
    graphs["mb2-ssd-lite detector"] = mb2
    return {name: simulate_cuda_placement(path, standin_cache) for name, path in graphs.items()}


# Compute ops each graph must contain, so that the check is seen to cover them.
KEY_OPS = {"ssd300-voc loss": {"LogSoftmax", "CumSum", "ArgMax", "ScatterElements",
                               "GatherElements", "Log", "ReduceSum", "Gather",
                               # the hard negatives' k-th largest by bisection
                               "Mod", "GreaterOrEqual"},
           "ssd300-voc detector": {"Conv", "Softmax", "TopK", "NonMaxSuppression",
                                   "ScatterND", "Exp"},
           "ssd300-voc model": {"Conv", "MaxPool", "Relu", "Sqrt", "Concat"},
           "ssd-shapes detector": {"Conv", "NonMaxSuppression"},
           # depthwise convolutions (Conv with groups) and ReLU6 (Clip)
           "mb2-ssd-lite detector": {"Conv", "Clip", "Add", "NonMaxSuppression"}}



@pytest.mark.parametrize("name", sorted(KEY_OPS))
def test_every_compute_node_has_a_cuda_kernel_and_is_placed_on_cuda(simulated, name):
    report = simulated[name]
    print(format_simulated(report))
    exported_ops = {n.op_type for n in report.exported}
    assert KEY_OPS[name] <= exported_ops, KEY_OPS[name] - exported_ops
    assert report.without_kernel == [], format_simulated(report)
    assert report.cpu_compute == [], format_simulated(report)
    assert report.ok
    on_cpu = [n for n in report.placed if n.provider != CUDA]
    # What stays on the CPU is shape arithmetic: a few int64 values.
    assert all(n.shape_work for n in on_cpu)
    assert sum(n.provider == CUDA for n in report.placed) > 0.9 * len(report.placed)
    copies = Counter(n.op_type for n in report.placed if n.op_type.startswith("Memcpy"))
    # No copy between device and host: nothing read back mid-graph (a TopK whose K came
    # from the data would be one: CUDA TopK takes K on the host; the loss has no TopK).
    assert copies == Counter(), format_simulated(report)


def control(tmp_path, name, nodes, inputs, out_type):
    """A small graph: Relu on a float input (to have a CUDA node), then ``nodes``."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), *nodes], name,
        [helper.make_tensor_value_info("x", T.FLOAT, [4, 4]), *inputs],
        [helper.make_tensor_value_info("y", out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


CONTROLS = {
    # CUDA's Clip has kernels for float, double, half and 8/64-bit integers, not int32.
    "clip_int32": ([helper.make_node("Cast", ["r"], ["c"], to=T.INT32, name="cast"),
                    helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip")],
                   [helper.make_tensor_value_info("lo", T.INT32, []),
                    helper.make_tensor_value_info("hi", T.INT32, [])], T.INT32, "clip", True),
    # Det has no CUDA kernel at all.
    "det": ([helper.make_node("Det", ["r"], ["y"], name="det")], [], T.FLOAT, "det", True),
    # A CUDA ArgMax kernel exists, but the CUDA provider refuses select_last_index=1:
    # only the partitioner can tell.
    "argmax_last": ([helper.make_node("ArgMax", ["r"], ["y"], axis=1, select_last_index=1,
                                      name="argmax")], [], T.INT64, "argmax", False),
}


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_negative_controls_are_flagged(tmp_path, standin_cache, name):
    nodes, inputs, out_type, culprit, registry_knows = CONTROLS[name]
    report = simulate_cuda_placement(control(tmp_path, name, nodes, inputs, out_type),
                                     standin_cache)
    assert not report.ok
    assert [n.name for n in report.cpu_compute] == [culprit]
    assert [n.name for n in report.without_kernel] == ([culprit] if registry_knows else [])
    assert {n.name: n.provider for n in report.placed}["relu"] == CUDA


def test_placement_command(exported, tmp_path, standin_cache, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(standin_cache))
    r = invoke("placement", "--simulate-cuda", exported["loss"])
    assert r.exit_code == 0, r.output
    assert "simulated CUDAExecutionProvider (onnxruntime-gpu" in r.output
    assert "0 without a CUDA kernel" in r.output and "0 compute nodes on the CPU" in r.output
    nodes, inputs, out_type, *_ = CONTROLS["det"]
    r = invoke("placement", "--simulate-cuda", control(tmp_path, "det", nodes, inputs,
                                                        out_type))
    assert r.exit_code == 1 and "NO CUDA KERNEL: Det det" in r.output
    assert "CPU COMPUTE: Det det" in r.output


def test_partitioner_log_is_read_per_provider():
    tag = "[V:onnxruntime:, session_state.cc:1586 VerifyEachNodeIsAssignedToAnEp]"
    log = "\n".join([
        f"{tag} Node placements",
        f"{tag}  Node(s) placed on [CPUExecutionProvider]. Number of nodes: 1",
        f"{tag}   Shape (node_shape_2)",
        f"{tag}  Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 2",
        f"{tag}   Relu ()",
        f"{tag}   MemcpyToHost (Memcpy)",
        "[V:onnxruntime:, session_state.cc:193 CreateGraphInfo] SaveMLValueNameIndexMapping"])
    assert parse_partitioner_log(log) == [(CPU, "Shape", "node_shape_2"), (CUDA, "Relu", ""),
                                          (CUDA, "MemcpyToHost", "Memcpy")]
    # One provider for every node: the log gives only the count.
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="a"),
                               helper.make_node("Relu", ["y"], ["z"], name="b")], "g", [], [])
    one = f"{tag}  All nodes placed on [CUDAExecutionProvider]. Number of nodes: 2"
    assert parse_partitioner_log(one, graph) == [(CUDA, "Relu", "a"), (CUDA, "Relu", "b")]
    with pytest.raises(ValueError, match="places 3 nodes"):
        parse_partitioner_log(one.replace(": 2", ": 3"), graph)


def test_shape_work_needs_known_small_int64_outputs():
    assert _is_shape_work({"op_type": "Concat", "outputs": [{"int64": [3]}]})
    assert not _is_shape_work({"op_type": "Concat", "outputs": [{"int64": [None]}]})
    assert not _is_shape_work({"op_type": "Concat", "outputs": [{"float": [3]}]})
    assert not _is_shape_work({"op_type": "Concat", "outputs": [{"int64": [9]}]})
    assert not _is_shape_work({"op_type": "TopK", "outputs": [{"int64": [1]}]})
    assert not _is_shape_work({"op_type": "Concat", "outputs": []})
