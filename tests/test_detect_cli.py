import json

import numpy as np
from PIL import Image

from conftest import invoke
from ssdonnx.draw import class_colour


def make_images(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (90, 60), dtype=np.uint8)).save(folder / "grey.png")
    return folder


def test_detect_writes_pictures_and_json(exported, tmp_path):
    images = make_images(tmp_path / "in")
    out = tmp_path / "out"
    result = invoke("detect", exported["detector"], images, "--out", out, "--provider", "cpu",
                    "--score", "0.03", "--batch", "1")
    assert result.exit_code == 0, result.output
    assert "2 images" in result.output and "s per image on cpu" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "detections.json", "grey.png"]
    data = {Path_name(d["image"]): d for d in json.loads((out / "detections.json").read_text())}
    a = data["a.jpg"]
    assert (a["width"], a["height"]) == (200, 120)
    assert a["detections"], "random weights still give low-score boxes above 0.03"
    for d in a["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 200 and 0 <= y1 <= y2 <= 120      # pixels of the original
        assert d["score"] >= 0.03 and 1 <= d["class_id"] <= 20 and isinstance(d["label"], str)
    picture = Image.open(out / "a.png")
    assert picture.size == (200, 120)
    # Something was drawn: the picture differs from the input.
    assert np.abs(np.asarray(picture, dtype=int) - np.asarray(Image.open(images / "a.jpg"),
                                                                dtype=int)).max() > 50


def Path_name(p):
    return p.rsplit("/", 1)[-1]


def test_unreadable_images_are_named_and_skipped(exported, tmp_path):
    images = make_images(tmp_path / "in")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    result = invoke("detect", exported["detector"], images, "--out", tmp_path / "out",
                    "--provider", "cpu")
    assert result.exit_code == 1
    assert "broken.jpg" in result.output and "2 images" in result.output
    assert "1 of 3 images could not be read" in result.output
    assert (tmp_path / "out" / "a.png").exists()


def test_detect_input_errors(exported, tmp_path):
    images = make_images(tmp_path / "in")
    r = invoke("detect", exported["loss"], images)
    assert r.exit_code == 2 and "is a loss graph; this needs a detector graph" in r.output
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    r = invoke("detect", exported["detector"], images, "--labels", tmp_path / "names.txt")
    assert r.exit_code == 2 and "2 names for the model's 20 foreground classes" in r.output
    r = invoke("detect", exported["detector"], tmp_path / "nothing")
    assert r.exit_code == 2 and "no such file or folder" in r.output
    assert "Traceback" not in r.output


def test_class_colours_are_distinct():
    colours = {class_colour(i) for i in range(1, 81)}
    assert len(colours) == 80


def test_bench_cli_json(tmp_path):
    r = invoke("bench", "head", "--batch", "1", "--repeat", "1", "--provider", "cpu", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output[r.output.index("{"):])["rows"]
    impls = {row["impl"] for row in rows}
    assert impls == {"loop reference", "ssdonnx eager", "onnxruntime cpu"}
    assert all(row["median_ms"] > 0 and row["ratio"] > 0 for row in rows)
    r = invoke("bench", "loss", "--batch", "x")
    assert r.exit_code == 2 and "expected sizes like 1,8,32" in r.output


def test_bench_loss_profile_names_where_the_time_goes():
    r = invoke("bench", "loss", "--batch", "1", "--repeat", "1", "--provider", "cpu",
               "--json", "--profile")
    assert r.exit_code == 0, r.output
    profile = json.loads(r.output[r.output.index("{"):])["profile"]
    assert "loop reference: " in profile and "ssdonnx eager: " in profile
    assert "aten::" in profile
    r = invoke("bench", "head", "--profile")
    assert r.exit_code == 2 and "only for `bench loss`" in r.output
