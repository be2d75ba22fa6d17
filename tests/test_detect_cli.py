import json
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import invoke
from ssdonnx.app.draw import class_colour, draw_detections, place_labels
from ssdonnx.app.annotate import result_names


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
    assert "2 images" in result.output and "s per image on onnxruntime cpu" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "detections.json", "grey.png"]
    data = {Path(d["image"]).name: d for d in json.loads((out / "detections.json").read_text())}
    a = data["a.jpg"]
    assert (a["width"], a["height"]) == (200, 120) and a["picture"] == "a.png"
    assert a["detections"], "random weights still give low-score boxes above 0.03"
    for d in a["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 200 and 0 <= y1 <= y2 <= 120      # pixels of the original
        assert d["score"] >= 0.03 and 1 <= d["class_id"] <= 20 and isinstance(d["label"], str)
    # Small pictures are drawn enlarged (shorter side DISPLAY_MIN_SIDE), aspect kept.
    picture = Image.open(out / "a.png")
    assert picture.size == (800, 480)
    # Something was drawn: the picture differs from the (enlarged) input.
    plain = Image.open(images / "a.jpg").resize(picture.size, Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(picture, dtype=int) - np.asarray(plain, dtype=int)).max() > 50


def test_unreadable_images_are_named_and_skipped_with_exit_2(exported, tmp_path):
    images = make_images(tmp_path / "in")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    result = invoke("detect", exported["detector"], images, "--out", tmp_path / "out",
                    "--provider", "cpu")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "broken.jpg" in result.output and "2 images" in result.output
    assert "1 of 3 pictures could not be read" in result.output
    assert (tmp_path / "out" / "a.png").exists()
    one = invoke("detect", exported["detector"], images / "a.jpg", "--out", tmp_path / "one",
                 "--provider", "cpu")
    assert one.exit_code == 0 and "1 image, " in one.output


def test_out_in_the_input_folder_never_overwrites_an_input(exported, tmp_path):
    images = make_images(tmp_path / "in")                       # a.jpg, grey.png
    before = (images / "grey.png").read_bytes()
    r = invoke("detect", exported["detector"], images, "--out", images, "--provider", "cpu")
    assert r.exit_code == 2 and "would overwrite input pictures" in r.output
    assert str(images / "grey.png") in r.output
    assert (images / "grey.png").read_bytes() == before and not (images / "a.png").exists()
    # Only JPEGs there: the results go beside them, and the inputs stay as they were.
    (images / "grey.png").unlink()
    jpeg = (images / "a.jpg").read_bytes()
    r = invoke("detect", exported["detector"], images, "--out", images, "--provider", "cpu")
    assert r.exit_code == 0, r.output
    assert (images / "a.jpg").read_bytes() == jpeg and (images / "a.png").exists()


def test_pictures_of_one_name_keep_one_result_each(exported, tmp_path):
    images = make_images(tmp_path / "in")
    Image.open(images / "a.jpg").save(images / "a.png")
    sub = images / "sub"
    sub.mkdir()
    Image.open(images / "a.jpg").save(sub / "a.jpg")
    out = images / "out"                          # inside the input folder
    (out / "old").mkdir(parents=True)
    Image.open(images / "a.jpg").save(out / "old" / "earlier.png")
    r = invoke("detect", exported["detector"], images, "--out", out, "--provider", "cpu")
    assert r.exit_code == 0, r.output
    assert "4 images" in r.output                 # out/ is not searched for input
    entries = json.loads((out / "detections.json").read_text())
    pictures = {Path(e["image"]).relative_to(images).as_posix(): e["picture"]
                for e in entries}
    assert pictures == {"a.jpg": "a_jpg.png", "a.png": "a_png.png", "grey.png": "grey.png",
                        "sub/a.jpg": "sub/a.png"}
    for name in pictures.values():
        assert (out / name).is_file()


def test_folders_are_searched_for_every_format_pillow_reads(exported, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    rgb = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    for suffix in (".webp", ".bmp", ".tif", ".gif"):
        Image.fromarray(rgb).save(images / f"p{suffix}")
    (images / "notes.txt").write_text("not a picture")
    r = invoke("detect", exported["detector"], images, "--out", tmp_path / "out",
               "--provider", "cpu")
    assert r.exit_code == 0, r.output
    assert "4 images" in r.output
    names = {e["picture"] for e in json.loads((tmp_path / "out" / "detections.json")
                                              .read_text())}
    assert names == {"p_webp.png", "p_bmp.png", "p_tif.png", "p_gif.png"}


def test_result_names_are_unique():
    pictures = [(Path(f"/x/{n}"), Path(n)) for n in
                ("a.jpg", "a.png", "a_jpg.png", "b.jpg", "c/b.jpg", "d.JPG")]
    pictures.append((Path("/y/b.jpg"), Path("b.jpg")))
    names = [n.as_posix() for n in result_names(pictures)]
    assert len(set(names)) == len(names)
    assert names[:6] == ["a_jpg.png", "a_png.png", "a_jpg-2.png", "b.png", "c/b.png", "d.png"]
    assert names[6] == "b-2.png"


def test_labels_stay_inside_and_do_not_cover_each_other():
    # The case: a circle beside a square on a small picture; the square's label
    # must not be covered by the circle's.
    boxes = [[10, 40, 60, 90], [62, 38, 110, 88], [0, 0, 30, 20], [140, 100, 160, 120]]
    sizes = [(70, 14), (70, 14), (60, 14), (60, 14)]
    placed = place_labels(boxes, sizes, (160, 120))
    for (x1, y1, x2, y2), (w, h) in zip(placed, sizes):
        assert 0 <= x1 and x2 <= 160 and 0 <= y1 and y2 <= 120
        assert (x2 - x1, y2 - y1) == (w, h)
    for i in range(len(placed)):
        for j in range(i):
            a, b = placed[i], placed[j]
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), \
                (i, j, placed)


def test_transparent_pictures_are_drawn_on_white():
    rgba = np.zeros((120, 160, 4), np.uint8)       # transparent black
    picture = draw_detections(Image.fromarray(rgba, "RGBA"), [])
    assert picture.mode == "RGB" and np.asarray(picture).min() == 255


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
