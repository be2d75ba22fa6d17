import pytest
from click.testing import CliRunner

from ssdonnx.cli import main


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
