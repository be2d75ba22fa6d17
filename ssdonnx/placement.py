"""Where onnxruntime really runs each node: read from its session profile."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .export import read_info
from .graphs import example_inputs
from .runtime import Session

# Nodes onnxruntime itself keeps on the CPU because they only compute shapes.
SHAPE_OPS = {"Shape", "Size", "Constant", "ConstantOfShape", "Range", "Reshape",
             "Squeeze", "Unsqueeze", "Concat", "Gather", "Slice", "Cast", "Expand",
             "Equal", "Where", "Mul", "Add", "Sub", "Div", "Max", "Min"}


# The profiled run uses a batch of 9: every tensor that carries per-image data then has
# more than SHAPE_MAX_SIZE elements and cannot pass for shape arithmetic.
PROFILE_BATCH, PROFILE_OBJECTS = 9, 3
SHAPE_MAX_SIZE = 8


def node_providers(path, provider: str = "cuda") -> list[dict]:
    """Run the graph once with profiling on; one dict per executed node: name, op_type,
    provider and output shapes, as onnxruntime's profile reports them."""
    info = read_info(path)
    with tempfile.TemporaryDirectory() as tmp:
        sess = Session(path, provider, profile=Path(tmp) / "placement")
        sess.run(**example_inputs(info.kind, info.config, PROFILE_BATCH, PROFILE_OBJECTS))
        profile = Path(sess.end_profiling()).read_text()
    nodes = {}
    for event in json.loads(profile):
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            nodes[event["name"].removesuffix("_kernel_time")] = {
                "name": event["name"].removesuffix("_kernel_time"),
                "op_type": args.get("op_name"), "provider": args["provider"],
                "outputs": args.get("output_type_shape", [])}
    return list(nodes.values())


def _is_shape_work(node: dict) -> bool:
    """int64 outputs of at most a few elements: shape arithmetic, not tensor compute."""
    if node["op_type"] not in SHAPE_OPS:
        return False
    for out in node["outputs"]:
        for dtype, shape in out.items():
            size = 1
            for d in shape:
                size *= d
            if dtype != "int64" or size > SHAPE_MAX_SIZE:
                return False
    return True


def cpu_compute_nodes(path, provider: str = "cuda") -> list[dict]:
    """Nodes placed on CPUExecutionProvider in a session asked for ``provider`` (CUDA),
    shape-only work aside."""
    return cpu_compute(node_providers(path, provider))


def cpu_compute(nodes: list[dict]) -> list[dict]:
    """The nodes of ``node_providers`` that ran on the CPU, shape-only work aside."""
    return [n for n in nodes
            if n["provider"] == "CPUExecutionProvider" and not _is_shape_work(n)]


def format_placement(path, nodes: list[dict]) -> str:
    """Nodes per provider and op type, then the CPU compute nodes (should be none)."""
    flagged = cpu_compute(nodes)
    counts: dict[tuple[str, str], int] = {}
    for n in nodes:
        key = (n["provider"], n["op_type"])
        counts[key] = counts.get(key, 0) + 1
    lines = [f"{path}: {len(nodes)} nodes ran, {len(flagged)} compute nodes on the CPU"]
    lines += [f"  {prov:<24} {op:<18} {k}" for (prov, op), k in sorted(counts.items())]
    lines += [f"  CPU compute: {n['name']} ({n['op_type']}) -> {n['outputs']}" for n in flagged]
    return "\n".join(lines)
