from pathlib import Path

import pytest
from click.testing import CliRunner

from ssdonnx.app.cli import main


def invoke(*args):
    """Run the CLI in-process; returns click's Result (exit_code, output)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """`ssdonnx export all` for ssd300-voc once per session, with its verification."""
    folder = tmp_path_factory.mktemp("exported")
    result = invoke("export", "all", "--config", "ssd300-voc", "--output", folder)
    assert result.exit_code == 0, result.output
    return {"folder": folder, "output": result.output,
            **{k: folder / f"{k}.onnx" for k in ("model", "detector", "loss")}}


SHIPPED = Path(__file__).resolve().parent.parent / "models" / "ssd-shapes"


@pytest.fixture(scope="session")
def shapes_detector(tmp_path_factory):
    """The shipped ssd-shapes detector, exported (and verified) once per session."""
    out = tmp_path_factory.mktemp("shipped") / "detector.onnx"
    result = invoke("export", "detector", "--config", "ssd-shapes", "--weights",
                    SHIPPED / "weights.pth", "--output", out)
    assert result.exit_code == 0, result.output
    return out
