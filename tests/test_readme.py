"""The docs cannot rot: their commands are what .ci/run runs, their Python blocks run here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {p.relative_to(ROOT).as_posix(): p.read_text()
        for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
PYTHON_BLOCKS = [(name, i, block) for name, text in DOCS.items()
                 for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S))]


def test_ci_runs_the_readme_commands():
    for marker, ending in (("main", "--out detections --force --provider cpu"),
                           ("tests", "python -m pytest -q")):
        block = README.split(f"<!-- command:{marker} -->", 1)[1].split("```", 2)[1]
        lines = [line for line in block.splitlines() if line.startswith("python3 -m venv")]
        assert len(lines) == 1 and lines[0].endswith(ending)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command tests" in ci and "readme_command main" in ci
    assert "<!-- tour:start -->" in README and "<!-- tour:start -->" in ci


def test_every_benchmark_table_names_its_command():
    # The benchmark commands .ci/run finds in docs/benchmarks.md (with its own pattern):
    # each tool once, so that every table there is re-run by CI.
    ci = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"grep -E '(\^`python tools/bench_[^']*)' -o docs/benchmarks.md",
                        ci).group(1)
    found = sorted(set(m.strip("`") for m in re.findall(pattern, DOCS["docs/benchmarks.md"],
                                                        re.M)))
    tools = sorted(p.name for p in (ROOT / "tools").glob("bench_*.py"))
    assert [cmd.split()[1].removeprefix("tools/") for cmd in found] == tools, found


def test_docs_link_to_files_that_exist():
    for name, text in DOCS.items():
        base = (ROOT / name).parent
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if not target.startswith("http"):
                assert (base / target).exists(), f"{name} links to {target}"


@pytest.mark.parametrize("name, index, code", PYTHON_BLOCKS,
                         ids=[f"{n}-{i}" for n, i, _ in PYTHON_BLOCKS])
def test_python_blocks_run(name, index, code, exported, shapes_detector, capsys,
                           monkeypatch):
    monkeypatch.chdir(ROOT)      # the blocks name files as the README's commands do
    code = code.replace('"models/ssd300-voc/loss.onnx"', repr(str(exported["loss"])))
    code = code.replace('"models/ssd-shapes/detector.onnx"', repr(str(shapes_detector)))
    exec(compile(code, f"{name} python block {index}", "exec"), {})


def test_there_are_python_blocks():
    assert len([b for b in PYTHON_BLOCKS if b[0] == "README.md"]) >= 2
