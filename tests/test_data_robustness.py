"""Data that never stops a run: annotation folders by any name, every picture decoded
when a set is opened (bad ones listed together, or skipped and named with --skip-bad),
truncated JPEGs read with a warning, splits for any id naming, and commands that say
when nothing was found; small made-up sets."""

import csv
import json
import re
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import invoke
from ssdonnx.app.clikit import StepLines
from ssdonnx.errors import DataError
from ssdonnx.pictures import TruncatedPictureWarning, read_picture
from ssdonnx.training.data import VOCDataset, natural_order, write_split
from test_tools import run_tool

XML = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
<object><name>blob</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>
<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object></annotation>"""


def photo_set(root, ids, annotations="annots", size=(64, 48)):
    """Pictures in images/ (noisy JPEGs with a bright block) and their VOC XML in
    ``annotations``/, as published sets ship them: no lists, no VOC folder names."""
    (root / "images").mkdir(parents=True)
    (root / annotations).mkdir()
    rng = np.random.default_rng(0)
    w, h = size
    for i in ids:
        pixels = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        pixels[10:30, 16:40] = 230
        Image.fromarray(pixels).save(root / "images" / f"{i}.jpg", quality=95)
        (root / annotations / f"{i}.xml").write_text(
            XML.format(w=w, h=h, x1=17, y1=11, x2=40, y2=30))
    return root


def truncate(path, cut=20):
    path.write_bytes(path.read_bytes()[:-cut])


# --- annotation folders ----------------------------------------------------------------

def test_annots_folder_is_found_by_its_name_and_said_in_one_line(tmp_path):
    data = photo_set(tmp_path / "set", [f"{i:05d}" for i in range(1, 11)])
    result = invoke("data", "split", data, "--every", "5")
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if line.startswith("annotations:")]
    assert len(said) == 1 and "annots (found by its name" in said[0], result.output
    assert "8 train and 2 val pictures (every 5th held out)" in result.output
    ds = VOCDataset(data, "train", ("blob",), size=32)
    assert len(ds) == 8 and any("annots" in n for n in ds.notes)


def test_any_annotation_folder_by_option_and_a_yolo_labels_folder_is_not_taken(tmp_path):
    data = photo_set(tmp_path / "set", ["a", "b", "c"], annotations="boxes_xml")
    (data / "labels").mkdir()                                 # YOLO's: text, not XML
    (data / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    refused = invoke("data", "split", data)
    assert refused.exit_code == 2 and "--annotations DIR" in refused.output
    assert "Traceback" not in refused.output
    ds = VOCDataset(data, "all", ("blob",), size=32, annotations="boxes_xml")
    assert len(ds) == 3 and ds.notes == []                    # named: nothing to say
    outside = VOCDataset(data, "all", ("blob",), size=32,
                         annotations=data.resolve() / "boxes_xml")
    assert len(outside) == 3


# --- splits for any naming --------------------------------------------------------------

@pytest.mark.parametrize("ids, held", [
    ([f"{i:05d}" for i in range(1, 13)], ["00005", "00010"]),                # no dashes
    ([f"img-{i}" for i in range(1, 13)], ["img-5", "img-10"]),               # 10 after 9
    ([f"cat{i}_v2" for i in (3, 20, 100, 7, 1)], ["cat100_v2"]),
])
def test_every_nth_picture_is_held_out_in_natural_order(tmp_path, ids, held):
    data = photo_set(tmp_path / "set", ids)
    split = write_split(data, every=5)
    assert split["val"] == held
    assert sorted(split["train"] + split["val"]) == sorted(ids)
    listed = (data / "ImageSets" / "Main" / "val.txt").read_text().split()
    assert listed == held


def test_natural_order_reads_numbers_as_numbers():
    assert natural_order(["b-10", "b-9", "a-100", "a-20"]) == ["a-20", "a-100", "b-9", "b-10"]


def test_split_refuses_two_ways_and_too_few_pictures(tmp_path):
    data = photo_set(tmp_path / "set", ["1", "2", "3"])
    both = invoke("data", "split", data, "--every", "2", "--val", "0.5")
    assert both.exit_code == 2 and "give one" in both.output
    few = invoke("data", "split", data, "--every", "5")
    assert few.exit_code == 2 and "3 annotated pictures" in few.output


# --- pictures checked when a set is opened ----------------------------------------------

def test_a_truncated_jpeg_is_read_with_a_warning(tmp_path):
    data = photo_set(tmp_path / "set", ["p1"])
    picture = data / "images" / "p1.jpg"
    whole = np.asarray(read_picture(picture))
    truncate(picture)
    with pytest.warns(TruncatedPictureWarning, match="p1.jpg: the file ends early"):
        cut = np.asarray(read_picture(picture))
    assert cut.shape == whole.shape
    picture.write_bytes(picture.read_bytes()[:300])       # the header alone: refused
    with pytest.raises(DataError, match="not a readable picture"):
        read_picture(picture)


def test_a_set_with_a_truncated_picture_warns_once_when_opened(tmp_path):
    data = photo_set(tmp_path / "set", ["p1", "p2", "p3"])
    truncate(data / "images" / "p2.jpg")
    with pytest.warns(TruncatedPictureWarning, match=r"1 pictures .* end early.*: p2") as w:
        ds = VOCDataset(data, "all", ("blob",), size=32)
    assert len(w) == 1 and ds.truncated == ("p2",) and len(ds) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # not again in each epoch
        image, targets = ds[1]
    assert image.shape == (3, 32, 32) and len(targets) == 1


def bad_set(tmp_path, n=6):
    """A set of ``n`` with two bad pictures: one not a picture, one of another size than
    its annotation."""
    data = photo_set(tmp_path / "set", [f"{i:03d}" for i in range(1, n + 1)])
    (data / "images" / "002.jpg").write_bytes(b"<html>not a picture</html>")
    Image.new("RGB", (50, 50)).save(data / "images" / "005.jpg")
    return data


def test_every_bad_picture_is_listed_in_one_message_before_the_first_epoch(tmp_path):
    data = bad_set(tmp_path)
    seen = []
    with pytest.raises(DataError) as caught:
        VOCDataset(data, "all", ("blob",), size=32, progress=lambda n, t: seen.append(t))
    message = str(caught.value)
    assert message.startswith("2 of 6 pictures cannot be used")
    assert "002.jpg: not a readable picture" in message
    assert "005.jpg is 50 x 50" in message and "--skip-bad" in message
    assert len(seen) == 6                                 # every picture, one progress step
    out = tmp_path / "run"
    result = invoke("train", "--config", "ssd-shapes", "--data", data, "--image-set", "all",
                    "--out", out, "--epochs", "1", "--batch", "2")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "2 of 6 pictures cannot be used" in result.output
    assert not (out / "last.pth").exists()


def test_skip_bad_goes_on_and_names_what_it_left_out(tmp_path):
    data = bad_set(tmp_path)
    out = tmp_path / "run"
    result = invoke("train", "--config", "ssd-shapes", "--data", data, "--image-set", "all",
                    "--out", out, "--epochs", "2", "--batch", "2", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "skipped 2 bad pictures" in result.output and "002.jpg" in result.output
    assert "(2 bad pictures skipped, named there)" in result.output
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["skipped"] for r in rows] == ["2", "2"]
    assert rows[0]["skipped_ids"] == "002;005"
    evaluated = invoke("evaluate", out / "last.pth", "--data", data, "--image-set", "all",
                       "--skip-bad", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output.strip().splitlines()[-1])
    assert report["skipped"] == ["002", "005"]


def test_a_run_reads_a_truncated_picture_and_says_so(tmp_path):
    data = photo_set(tmp_path / "set", [f"{i}" for i in range(1, 5)])
    truncate(data / "images" / "3.jpg")
    result = invoke("train", "--config", "ssd-shapes", "--data", data, "--image-set", "all",
                    "--out", tmp_path / "run", "--epochs", "1", "--batch", "2")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "end early" in warned[0] and ": 3" in warned[0], result.output


# --- progress inside an epoch when not on a terminal -------------------------------------

def test_step_lines_write_every_so_many_seconds():
    now, written = [0.0], []
    lines = StepLines(10, written.append, clock=lambda: now[0])
    for _ in range(8):
        now[0] += 3
        lines(4, 32, "epoch 1/2", "loss 1.0")
    # 3, 6, 9: nothing; 12: a line; 15, 18, 21: nothing; 24: a line
    assert written == ["epoch 1/2: 16/32 (50%) loss 1.0", "epoch 1/2: 32/32 (100%) loss 1.0"]


def test_train_off_a_terminal_writes_progress_lines_inside_the_epoch(tmp_path):
    data = photo_set(tmp_path / "set", [f"{i}" for i in range(1, 7)])
    result = invoke("train", "--config", "ssd-shapes", "--data", data, "--image-set", "all",
                    "--out", tmp_path / "run", "--epochs", "1", "--batch", "2",
                    "--log-every", "0")
    assert result.exit_code == 0, result.output
    steps = re.findall(r"^epoch 1/1: (\d)/6 \(\d+%\) loss_l", result.output, re.M)
    assert steps == ["2", "4", "6"], result.output


# --- saying when nothing was found --------------------------------------------------------

def test_detect_says_when_nothing_passes_the_score(shapes_detector, tmp_path):
    data = photo_set(tmp_path / "set", ["a", "b"])
    out = tmp_path / "found"
    result = invoke("detect", shapes_detector, data / "images", "--out", out,
                    "--score", "1.0")
    assert result.exit_code == 0, result.output
    assert re.search(r"2 pictures of 2 had no detection with score >= 1.0 \(the best "
                     r"score on them was 0\.\d+", result.output), result.output
    entries = json.loads((out / "detections.json").read_text())
    assert all(e["detections"] == [] and 0 < e["best_score"] < 1 for e in entries)
    shown = invoke("detect", shapes_detector, data / "images", "--out", out, "--force",
                   "--score", "0.0")
    best = {e["picture"]: e["best_score"] for e in json.loads(
        (out / "detections.json").read_text())}
    assert shown.exit_code == 0 and best == {e["picture"]: e["best_score"] for e in entries}


def test_box_fit_with_nothing_found_and_a_bad_picture(shapes_detector, tmp_path):
    data = photo_set(tmp_path / "set", ["a", "b", "c"])
    (data / "images" / "b.jpg").write_bytes(b"not a picture")
    result = run_tool("box_fit.py", shapes_detector, data, "--image-set", "all", "--score",
                      "1.0")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("left out:") == 1
    assert "2 pictures" in result.stdout and "1 unreadable, left out" in result.stdout
    assert "no detection reached the score on any picture (best score seen: 0." in \
        result.stdout, result.stdout
    missing = run_tool("box_fit.py", shapes_detector, tmp_path / "nowhere")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "no such data set" in missing.stderr
