"""The README cannot rot: its commands are what .ci/run runs, its Python blocks run here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_commands():
    commands = re.findall(r"^python3 -m venv .*$", README, re.M)
    assert len(commands) == 2
    assert any(c.endswith("ssdonnx export all --force") for c in commands)
    assert any(c.endswith("python -m pytest -q") for c in commands)
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'readme_line "python -m pytest -q"' in ci
    assert 'readme_line "ssdonnx export all --force"' in ci
    assert "<!-- tour:start -->" in README and "<!-- tour:start -->" in ci


def test_every_readme_number_names_its_command():
    for table in ("tools/bench_loss.py", "tools/bench_detect.py"):
        assert f"python {table}" in README


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_blocks_run(index, exported, capsys):
    code = PYTHON_BLOCKS[index].replace('"models/ssd300-voc/loss.onnx"',
                                        repr(str(exported["loss"])))
    exec(compile(code, f"README.md python block {index}", "exec"), {})


def test_there_are_python_blocks():
    assert len(PYTHON_BLOCKS) >= 2
