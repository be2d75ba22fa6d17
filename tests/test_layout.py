"""The package's shape: data flows one way between its layers, no module imports itself
back through another (function-level imports included), and the heavy toolchains load
only where they are used."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ssdonnx"
# What each layer may import (the core is every module directly in ssdonnx/).
LAYERS = {
    "core": {"core"},
    "testing": {"core", "testing"},
    "deploy": {"core", "deploy"},
    "training": {"core", "deploy", "training"},
    "devtools": {"core", "deploy", "training", "testing", "devtools"},
    "app": {"core", "deploy", "training", "devtools", "app"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module == "ssdonnx.__main__":      # the entry point belongs to the command line
        return "app"
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else "core"


def imports_of(path: Path) -> set[str]:
    """Every ssdonnx module ``path`` imports, at any depth of its code."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from . import loss" names a module; "from .loss import X" names a module
            names = [f"{prefix}.{a.name}" for a in node.names] + [prefix]
        else:
            continue
        found |= {n for n in names if n == "ssdonnx" or n.startswith("ssdonnx.")}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {n for n in found if n in modules and n != module}


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_there_is_no_import_cycle():
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for dep in sorted(GRAPH.get(module, ())):
            if dep == "ssdonnx":
                continue      # the package's lazy names import nothing at import time
            if state.get(dep) == "open":
                pytest.fail("import cycle: " + " -> ".join([*path, module, dep]))
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def test_layers_import_only_downwards():
    wrong = [f"{m} ({layer(m)}) imports {d} ({layer(d)})"
             for m, deps in GRAPH.items() for d in deps
             if d != "ssdonnx" and layer(d) not in LAYERS[layer(m)]]
    assert not wrong, wrong


def test_the_graph_sees_function_level_imports():
    # cli imports the export only inside its command: the walk must still see it.
    assert "ssdonnx.deploy.export" in GRAPH["ssdonnx.app.cli"]
    assert "ssdonnx.deploy.quantize" in GRAPH["ssdonnx.deploy.export"]


def loaded_after(code: str) -> list[str]:
    probe = (f"import sys\n{code}\nprint(sorted(m for m in ('torch', 'onnx', 'onnxruntime', "
             "'onnxscript') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return eval(proc.stdout.strip().splitlines()[-1])


def test_training_never_loads_the_onnx_toolchain():
    assert loaded_after("import ssdonnx.loss, ssdonnx.postprocess, ssdonnx.training.train") \
        == ["torch"]


def test_info_reads_a_file_without_torch(tmp_path):
    import onnx

    from ssdonnx.deploy.onnxfile import graph_metadata, set_metadata
    from ssdonnx.config import get_config

    # A loss-kind file of one node is enough for `info`; it never runs it.
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["loc"], ["loss_l"])], "g",
        [onnx.helper.make_tensor_value_info("loc", onnx.TensorProto.FLOAT, ["B", 760, 4])],
        [onnx.helper.make_tensor_value_info("loss_l", onnx.TensorProto.FLOAT, [])])
    proto = onnx.helper.make_model(graph)
    set_metadata(proto, graph_metadata("loss", get_config("ssd-shapes"), None, {}))
    onnx.save(proto, tmp_path / "x.onnx")
    code = ("from ssdonnx.app.cli import main\ntry:\n"
            f"    main(['info', {str(tmp_path / 'x.onnx')!r}])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code")
    assert "torch" not in loaded_after(code)


def test_the_command_line_stays_thin_and_the_readme_a_front_door():
    for name in ("cli.py", "training_cli.py"):
        assert len((PACKAGE / "app" / name).read_text().splitlines()) <= 450, name
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
