"""Where onnxruntime puts each node of a graph under CUDAExecutionProvider.

Two ways to find out, both from onnxruntime itself:

- On a GPU (``node_providers``): run the graph once with profiling on; the profile names
  the provider that ran each node. The stronger check: kernels really ran.
- Without one (``simulate_cuda_placement``): load onnxruntime-gpu's CUDA provider on stand-in CUDA
  libraries (``ssdonnx.devtools.cudastub``) in a child process, then (1) hold every node of the
  exported graph against the provider's kernel registry (op, domain, since-version and
  input types), and (2) create a session with verbose logging and read onnxruntime's
  partitioner, which logs the provider of every node of its optimised graph. No kernel
  runs: this proves placement, not numerical results.

Either way, a node on the CPU is acceptable only as shape arithmetic: int64 outputs of
at most ``SHAPE_MAX_SIZE`` values from the ops in ``SHAPE_OPS``, which onnxruntime keeps
on the host on purpose. This module imports neither torch nor onnxruntime at the top, so
that ``--simulate-cuda`` also runs where only onnx and onnxruntime are installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..errors import ProviderError, StandInUnavailable

# Nodes onnxruntime itself keeps on the CPU because they only compute shapes.
SHAPE_OPS = {"Shape", "Size", "Constant", "ConstantOfShape", "Range", "Reshape",
             "Squeeze", "Unsqueeze", "Concat", "Gather", "Slice", "Cast", "Expand",
             "Equal", "Where", "Mul", "Add", "Sub", "Div", "Max", "Min"}
# The profiled run uses a batch of 9: every tensor that carries per-image data then has
# more than SHAPE_MAX_SIZE elements and cannot pass for shape arithmetic.
PROFILE_BATCH, PROFILE_OBJECTS = 9, 3
SHAPE_MAX_SIZE = 8

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def _is_shape_work(node: dict) -> bool:
    """int64 outputs of at most a few elements: shape arithmetic, not tensor compute.
    ``node["outputs"]``: one {dtype: shape} per output; an unknown dimension is None."""
    if node["op_type"] not in SHAPE_OPS or not node["outputs"]:
        return False
    for out in node["outputs"]:
        for dtype, shape in out.items():
            if dtype != "int64" or shape is None or any(d is None for d in shape):
                return False
            size = 1
            for d in shape:
                size *= d
            if size > SHAPE_MAX_SIZE:
                return False
    return True


# --- on a GPU: onnxruntime's session profile ---------------------------------------------

def node_providers(path, provider: str = "cuda") -> list[dict]:
    """Run the graph once with profiling on; one dict per executed node: name, op_type,
    provider and output shapes, as onnxruntime's profile reports them."""
    from ..deploy.graphs import example_inputs
    from ..deploy.onnxfile import read_info
    from ..deploy.runtime import Session

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


def cpu_compute_nodes(path, provider: str = "cuda") -> list[dict]:
    """Nodes placed on CPUExecutionProvider in a session asked for ``provider`` (CUDA),
    shape-only work aside."""
    return cpu_compute(node_providers(path, provider))


def cpu_compute(nodes: list[dict]) -> list[dict]:
    """The nodes of ``node_providers`` that ran on the CPU, shape-only work aside."""
    return [n for n in nodes if n["provider"] == CPU and not _is_shape_work(n)]


def format_placement(path, nodes: list[dict]) -> str:
    """Nodes per provider and op type, then the CPU compute nodes (should be none)."""
    flagged = cpu_compute(nodes)
    counts: dict[tuple[str, str], int] = {}
    for n in nodes:
        key = (n["provider"], n["op_type"])
        counts[key] = counts.get(key, 0) + 1
    lines = [f"{path}: onnxruntime's session profile (kernels ran): {len(nodes)} nodes ran, "
             f"{len(flagged)} compute nodes on the CPU"]
    lines += [f"  {prov:<24} {op:<18} {k}" for (prov, op), k in sorted(counts.items())]
    lines += [f"  CPU compute: {n['name']} ({n['op_type']}) -> {n['outputs']}" for n in flagged]
    return "\n".join(lines)


def report(path, simulate_cuda: bool = False) -> tuple[str, bool]:
    """``ssdonnx placement``: the report on ``path`` and whether every compute node is on
    CUDA. On a GPU from the session profile; with ``simulate_cuda`` without one."""
    if simulate_cuda:
        simulated = simulate_cuda_placement(path)
        return format_simulated(simulated), simulated.ok
    from ..deploy.runtime import provider_problem

    problem = provider_problem("CUDAExecutionProvider")
    if problem:
        raise ProviderError(f"CUDAExecutionProvider cannot load here ({problem}); without a "
                            "GPU, use --simulate-cuda")
    nodes = node_providers(path, "cuda")
    return format_placement(path, nodes), not cpu_compute(nodes)


# --- without a GPU: the registry and the partitioner on stand-in libraries ---------------

@dataclass
class ExportedNode:
    """A node of the exported graph, held against the CUDA kernel registry."""
    name: str
    op_type: str
    since_version: int | None      # None: no ONNX schema known for it
    input_types: tuple[str, ...]
    cuda_kernel: bool


@dataclass
class PlacedNode:
    """A node of onnxruntime's optimised graph and the provider its partitioner chose."""
    name: str
    op_type: str
    provider: str
    outputs: list[dict] = field(default_factory=list)   # {dtype: shape} per output

    @property
    def shape_work(self) -> bool:
        return _is_shape_work({"op_type": self.op_type, "outputs": self.outputs})


@dataclass
class SimulatedPlacement:
    path: Path
    onnxruntime: str
    exported: list[ExportedNode]
    placed: list[PlacedNode]

    @property
    def without_kernel(self) -> list[ExportedNode]:
        return [n for n in self.exported if not n.cuda_kernel]

    @property
    def cpu_compute(self) -> list[PlacedNode]:
        return [n for n in self.placed if n.provider != CUDA and not n.shape_work]

    @property
    def ok(self) -> bool:
        return not self.without_kernel and not self.cpu_compute


def _onnxruntime_capi() -> Path:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("onnxruntime is not installed")
    return Path(spec.submodule_search_locations[0]) / "capi"


def _type_name(elem_type: int) -> str:
    return f"tensor({onnx.TensorProto.DataType.Name(elem_type).lower()})"


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Every named value's type, after ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    types = {v.name: v.type for v in (*graph.input, *graph.value_info, *graph.output)}
    for init in graph.initializer:
        t = onnx.TypeProto()
        t.tensor_type.elem_type = init.data_type
        t.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension(dim_value=d)
                                       for d in init.dims)
        types[init.name] = t
    return types


def _has_kernel(registry: dict, node: onnx.NodeProto, schema, types: dict) -> bool:
    """Whether a CUDA kernel covers the node's since-version and its types: each type
    constraint of the kernel must allow the types of the node's arguments bound to it
    (as onnxruntime's kernel lookup does)."""
    variadic = onnx.defs.OpSchema.FormalParameterOption.Variadic
    bound: dict[str, set[str]] = {}
    for formals, actuals in ((schema.inputs, node.input), (schema.outputs, node.output)):
        for i, name in enumerate(actuals):
            if not name or name not in types:
                continue
            formal = formals[min(i, len(formals) - 1)]
            if i >= len(formals) and formal.option != variadic:
                continue
            bound.setdefault(formal.type_str, set()).add(
                _type_name(types[name].tensor_type.elem_type))
    for start, end, constraints in registry.get((node.domain or "", node.op_type), []):
        if start <= schema.since_version <= end and all(
                actual <= set(constraints.get(name, actual)) for name, actual in bound.items()):
            return True
    return False


def check_registry(model: onnx.ModelProto, registry: dict) -> list[ExportedNode]:
    """Every node of ``model`` held against ``registry`` {(domain, op): [(start, end,
    {constraint: [types]})]}, the CUDA provider's kernels."""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    types = _value_types(model)
    out = []
    for node in model.graph.node:
        domain = node.domain or ""
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
        except onnx.defs.SchemaError:
            schema = None
        inputs = tuple(_type_name(types[i].tensor_type.elem_type)[7:-1] if i in types else "?"
                       for i in node.input if i)
        out.append(ExportedNode(node.name, node.op_type,
                                schema.since_version if schema else None, inputs,
                                schema is not None and _has_kernel(registry, node, schema,
                                                                   types)))
    return out


# The partitioner's verbose log (onnxruntime session_state.cc, VerifyEachNodeIsAssignedToAnEp):
#   " All nodes placed on [CUDAExecutionProvider]. Number of nodes: 94"   (one provider), or
#   " Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 12"     (several), each
#   "  Relu (node_relu_3)"                                                  then listed.
_PLACED_ON = re.compile(r"(All nodes|Node\(s\)) placed on \[(\w+)\]\. Number of nodes: (\d+)")
_NODE = re.compile(r"VerifyEachNodeIsAssignedToAnEp\]\s{2,}(\S+) \((.*)\)\s*$")


def parse_partitioner_log(log: str, graph: onnx.GraphProto | None = None
                          ) -> list[tuple[str, str, str]]:
    """(provider, op_type, node name) per node, from onnxruntime's verbose log. Where
    it says that all nodes went to one provider (and lists none), they are the nodes of
    ``graph``, the optimised graph."""
    placed, provider = [], None
    for line in log.splitlines():
        if m := _PLACED_ON.search(line):
            provider = m.group(2)
            if m.group(1) == "All nodes":
                if graph is None or len(graph.node) != int(m.group(3)):
                    raise ValueError(f"the log places {m.group(3)} nodes on {provider}; "
                                     "the optimised graph does not have that many")
                placed += [(provider, n.op_type, n.name) for n in graph.node]
                provider = None
        elif provider and (m := _NODE.search(line)):
            placed.append((provider, m.group(1), m.group(2)))
    return placed


def _outputs(node: onnx.NodeProto, types: dict) -> list[dict]:
    outs = []
    for name in node.output:
        t = types.get(name)
        if t is None or not t.tensor_type.HasField("shape"):
            outs.append({"unknown": None})
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim]
        outs.append({onnx.TensorProto.DataType.Name(t.tensor_type.elem_type).lower(): dims})
    return outs


def simulate_cuda_placement(path, cache: Path | None = None, timeout: float = 600
                            ) -> SimulatedPlacement:
    """Placement under CUDAExecutionProvider on a machine without a GPU (module doc).
    Raises StandInUnavailable where the stand-in libraries cannot be built or loaded."""
    from .cudastub import build

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    standins = build(_onnxruntime_capi(), cache)
    env = dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(
        p for p in (str(standins), os.environ.get("LD_LIBRARY_PATH", "")) if p))
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        optimised = Path(tmp) / "optimised.onnx"
        proc = subprocess.run([sys.executable, "-m", "ssdonnx.devtools.placement", str(path),
                               str(optimised), str(result)], env=env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0 or not result.exists():
            last = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
            raise StandInUnavailable(f"the simulated CUDA session for {path} failed (exit "
                                     f"{proc.returncode}): {' | '.join(last)}")
        child = json.loads(result.read_text())
        model = onnx.load(str(optimised))
    registry: dict = {}
    for op, domain, start, end, constraints in child["registry"]:
        registry.setdefault((domain, op), []).append((start, end, constraints))
    types = _value_types(model)
    by_name = {n.name: n for n in model.graph.node if n.name}
    placed = [PlacedNode(name, op, provider,
                         _outputs(by_name[name], types) if name in by_name else [])
              for provider, op, name in parse_partitioner_log(proc.stderr, model.graph)]
    if not placed:
        raise StandInUnavailable(f"onnxruntime logged no node placement for {path}")
    exported = check_registry(onnx.load(str(path), load_external_data=False), registry)
    return SimulatedPlacement(path, child["onnxruntime"], exported, placed)


def format_simulated(report: SimulatedPlacement) -> str:
    """Per op type: nodes, since-version, input types, CUDA kernel, partitioner's choice;
    then the totals and any node that fails the check."""
    short = {CUDA: "CUDA", CPU: "CPU"}
    rows: dict[str, dict] = {}
    for n in report.exported:
        row = rows.setdefault(n.op_type, {"nodes": 0, "since": set(), "types": set(),
                                          "kernel": set(), "placed": Counter()})
        row["nodes"] += 1
        row["since"].add(str(n.since_version))
        row["types"].add(", ".join(dict.fromkeys(n.input_types)) or "-")
        row["kernel"].add("yes" if n.cuda_kernel else "NO")
    for n in report.placed:
        row = rows.setdefault(n.op_type, {"nodes": 0, "since": {"-"}, "types": {"-"},
                                          "kernel": {"-"}, "placed": Counter()})
        where = short.get(n.provider, n.provider)
        row["placed"][where + (" shape" if n.provider != CUDA and n.shape_work else "")] += 1
    header = ("op type", "nodes", "since", "input types", "CUDA kernel", "placed (optimised)")
    body = [(op, str(r["nodes"]) if r["nodes"] else "-", "/".join(sorted(r["since"])),
             " | ".join(sorted(r["types"])), "/".join(sorted(r["kernel"])),
             ", ".join(f"{k} {v}" for k, v in sorted(r["placed"].items())) or "-")
            for op, r in sorted(rows.items())]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    table = ["  " + "  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()
             for line in [header, *body]]
    on = Counter(n.provider for n in report.placed)
    shape = [n for n in report.placed if n.provider != CUDA and n.shape_work]
    copies = Counter(n.op_type for n in report.placed if n.op_type.startswith("Memcpy"))
    lines = [f"{report.path}: simulated {CUDA} (onnxruntime-gpu {report.onnxruntime}: its "
             "kernel registry and partitioner, on stand-in CUDA libraries; no kernel ran)",
             *table,
             f"  exported graph: {len(report.exported)} nodes, "
             f"{len(report.without_kernel)} without a CUDA kernel",
             f"  optimised graph: {len(report.placed)} nodes, {on[CUDA]} on CUDA, "
             f"{len(shape)} shape-only on the CPU (int64, <= {SHAPE_MAX_SIZE} values), "
             f"{len(report.cpu_compute)} compute nodes on the CPU",
             "  copies between device and host: " + (", ".join(
                 f"{k} {v}" for k, v in sorted(copies.items())) or "none")]
    lines += [f"  NO CUDA KERNEL: {n.op_type} {n.name or '(unnamed)'} (since "
              f"{n.since_version}, inputs {', '.join(n.input_types)})"
              for n in report.without_kernel]
    lines += [f"  CPU COMPUTE: {n.op_type} {n.name or '(unnamed)'} -> {n.outputs}"
              for n in report.cpu_compute]
    return "\n".join(lines)


def _child(model: str, optimised: str, result: str) -> None:
    """In the child process, on the stand-in libraries: read the CUDA kernel registry,
    then create a CUDA session with verbose logging (the partitioner's log goes to
    stderr) that saves its optimised graph."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    if CUDA not in ort.get_available_providers():
        sys.exit(f"{CUDA} is not in this onnxruntime build (install onnxruntime-gpu)")
    registry = [[d.op_name, d.domain, d.version_range[0], d.version_range[1],
                 d.type_constraints] for d in C.get_all_opkernel_def() if d.provider == CUDA]
    opts = ort.SessionOptions()
    opts.log_severity_level = 0
    opts.log_verbosity_level = 0
    opts.optimized_model_filepath = optimised
    sess = ort.InferenceSession(model, opts, providers=[CUDA, CPU])
    if sess.get_providers()[0] != CUDA:
        sys.exit(f"the stand-in libraries did not make {CUDA} load: {sess.get_providers()}")
    Path(result).write_text(json.dumps({"onnxruntime": ort.__version__,
                                        "registry": registry}))


if __name__ == "__main__":
    _child(*sys.argv[1:4])
