"""The docs' helper tools (tools/box_fit.py, tools/mosaic.py) as the docs run them."""
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from ssdonnx.training.shapes import write_shapes

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def run_tool(name, *args):
    return subprocess.run([sys.executable, str(TOOLS / name), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_box_fit_scores_the_shipped_detector_far_above_the_whole_picture(shapes_detector,
                                                                         tmp_path):
    data = write_shapes(tmp_path / "shapes", train=1, val=12, seed=1000)
    result = run_tool("box_fit.py", shapes_detector, data, "--image-set", "val")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "12 pictures" in out, out
    found = int(re.search(r"with a detection: (\d+)/12", out).group(1))
    top, whole = (float(x) for x in re.findall(r"mean IoU ([0-9.]+)", out))
    ratio = float(re.search(r"truth's: median ([0-9.]+)", out).group(1))
    # The shipped detector (area mAP 0.94 on such pictures) finds every picture's
    # objects with tight boxes; the whole picture fits a shape on 96 x 96 poorly.
    assert found == 12, out
    assert top > 0.7 and whole < 0.3, out
    assert 0.8 < ratio < 1.25, out


def test_mosaic_lays_pictures_out_and_keeps_an_existing_file(tmp_path):
    pictures = []
    for i, size in enumerate([(300, 200), (100, 400), (50, 50)]):
        path = tmp_path / f"p{i}.png"
        Image.new("RGB", size, (255, 0, 0)).save(path)
        pictures.append(path)
    out = tmp_path / "sheet.jpg"
    result = run_tool("mosaic.py", out, *pictures, "--columns", "2", "--side", "100")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as sheet:
        assert sheet.size == (200, 200)                  # 2 columns, 2 rows of 100
        assert sheet.getpixel((50, 50))[0] > 200 and sheet.getpixel((50, 50))[1] < 60
        assert sheet.getpixel((150, 150)) == (255, 255, 255)   # the empty fourth tile
    before = out.read_bytes()
    again = run_tool("mosaic.py", out, pictures[0])
    assert again.returncode == 2 and "exists" in again.stderr
    assert out.read_bytes() == before
