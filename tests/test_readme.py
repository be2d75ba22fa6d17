"""The README cannot rot: its commands are what .ci/run runs, its Python blocks run here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_commands():
    for marker, ending in (("main", "--out detections --provider cpu"),
                           ("tests", "python -m pytest -q")):
        block = README.split(f"<!-- command:{marker} -->", 1)[1].split("```", 2)[1]
        lines = [line for line in block.splitlines() if line.startswith("python3 -m venv")]
        assert len(lines) == 1 and lines[0].endswith(ending)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_command tests" in ci and "readme_command main" in ci
    assert "<!-- tour:start -->" in README and "<!-- tour:start -->" in ci


def test_every_readme_number_names_its_command():
    # The benchmark commands .ci/run finds in the README (with its own pattern): each
    # tool once, so that every table in the README is re-run by CI.
    ci = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"grep -E '(\^`python tools/bench_[^']*)' -o README.md", ci).group(1)
    found = sorted(set(m.strip("`") for m in re.findall(pattern, README, re.M)))
    tools = sorted(p.name for p in (ROOT / "tools").glob("bench_*.py"))
    assert [cmd.split()[1].removeprefix("tools/") for cmd in found] == tools, found


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_blocks_run(index, exported, capsys):
    code = PYTHON_BLOCKS[index].replace('"models/ssd300-voc/loss.onnx"',
                                        repr(str(exported["loss"])))
    exec(compile(code, f"README.md python block {index}", "exec"), {})


def test_there_are_python_blocks():
    assert len(PYTHON_BLOCKS) >= 2
