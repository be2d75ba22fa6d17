import numpy as np
import pytest

from ssdonnx.errors import DataError
from ssdonnx.training.data import AnnotationError, VOCDataset, collate, parse_annotation
from ssdonnx.training.evaluate import average_precision, voc_map
from ssdonnx.training.shapes import SHAPE_CLASSES, write_shapes

# Hand-written VOC annotations: a difficult object, and an image with no objects.
WITH_DIFFICULT = """<annotation><size><width>200</width><height>100</height><depth>3</depth>
</size><object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>11</ymin>
<xmax>101</xmax><ymax>51</ymax></bndbox></object><object><name>cat</name>
<difficult>1</difficult><bndbox><xmin>51</xmin><ymin>1</ymin><xmax>201</xmax><ymax>101</ymax>
</bndbox></object></annotation>"""
EMPTY = """<annotation><size><width>64</width><height>48</height><depth>3</depth></size>
</annotation>"""


@pytest.fixture
def voc(tmp_path):
    from PIL import Image
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "Annotations" / "a.xml").write_text(WITH_DIFFICULT)
    (tmp_path / "Annotations" / "b.xml").write_text(EMPTY)
    Image.new("RGB", (200, 100), (10, 20, 30)).save(tmp_path / "JPEGImages" / "a.jpg")
    Image.new("RGB", (64, 48), (200, 20, 30)).save(tmp_path / "JPEGImages" / "b.jpg")
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("a\nb\n")
    return tmp_path


def test_parse_voc_xml_difficult_and_seed_normalisation(voc):
    targets, difficult, size = parse_annotation(voc / "Annotations" / "a.xml", ("cat", "dog"))
    assert size == (200, 100) and len(targets) == 1 and not difficult.any()
    # the seed: (pixel - 1) / size
    np.testing.assert_allclose(targets[0], [0 / 200, 10 / 100, 100 / 200, 50 / 100, 1])
    targets, difficult, _ = parse_annotation(voc / "Annotations" / "a.xml", ("cat", "dog"),
                                             keep_difficult=True)
    assert difficult.tolist() == [False, True] and targets[1, 4] == 0


def test_image_without_objects_and_collate(voc):
    ds = VOCDataset(voc, "val", ("cat", "dog"), size=96)
    image, targets = ds[1]
    assert image.shape == (3, 96, 96) and targets.shape == (0, 5)
    images, padded = collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 96, 96) and padded.shape == (2, 1, 5)
    assert padded[1, 0, 4] == -1


def test_bad_annotations(voc):
    (voc / "Annotations" / "c.xml").write_text("<annotation><size>")
    with pytest.raises(AnnotationError, match="c.xml: not a VOC annotation"):
        parse_annotation(voc / "Annotations" / "c.xml", ("cat",))
    with pytest.raises(AnnotationError, match="object 0 has class 'dog'"):
        parse_annotation(voc / "Annotations" / "a.xml", ("cat",))
    with pytest.raises(DataError, match="no such image set"):
        VOCDataset(voc, "train")


def test_shapes_are_written_in_voc_layout(tmp_path):
    root = write_shapes(tmp_path / "shapes", 6, 2, seed=3)
    ds = VOCDataset(root, "train", SHAPE_CLASSES, size=96)
    assert len(ds) == 6 and len(VOCDataset(root, "val", SHAPE_CLASSES)) == 2
    for i in range(len(ds)):
        _, t = ds[i]
        assert 1 <= len(t) <= 4 and (t[:, 2] > t[:, 0]).all() and (t[:, 3] > t[:, 1]).all()
    again = write_shapes(tmp_path / "again", 6, 2, seed=3)
    assert (again / "Annotations" / "train_000004.xml").read_text() == \
        (root / "Annotations" / "train_000004.xml").read_text()


def test_average_precision_hand_checked():
    recall = np.array([0.5, 0.5, 1.0])
    precision = np.array([1.0, 0.5, 2 / 3])
    assert average_precision(recall, precision, eleven_point=False) == pytest.approx(
        0.5 * 1.0 + 0.5 * 2 / 3)
    assert average_precision(recall, precision, eleven_point=True) == pytest.approx(
        (6 * 1.0 + 5 * 2 / 3) / 11)


def test_voc_map_counts_difficult_neither_way():
    truths = [(np.array([[0.1, 0.1, 0.4, 0.4, 0], [0.5, 0.5, 0.9, 0.9, 0]], np.float32),
               np.array([False, True]))]
    dets = [np.array([[0.1, 0.1, 0.4, 0.4, 0.9, 1],      # true positive
                      [0.5, 0.5, 0.9, 0.9, 0.8, 1],      # hits a difficult one: ignored
                      [0.1, 0.1, 0.4, 0.4, 0.7, 1]],     # duplicate: false positive
                     np.float32)]
    result = voc_map(dets, truths, ["thing"])
    assert result.per_class["thing"]["positives"] == 1
    assert result.map == pytest.approx(1.0) and result.map07 == pytest.approx(1.0)
    missed = voc_map([np.zeros((0, 6), np.float32)], truths, ["thing"])
    assert missed.map == 0.0


def test_shapes_with_small_objects(tmp_path):
    from conftest import invoke

    root = write_shapes(tmp_path / "small", 0, 12, seed=4, size_range=(6, 12))
    ds = VOCDataset(root, "val", SHAPE_CLASSES)
    for i in range(len(ds)):
        targets, _, (W, H) = ds.annotation(i)
        # VOC stores inclusive pixel corners: a side of s pixels reads back as s - 1.
        sides = (targets[:, 2:4] - targets[:, :2]) * [W, H] + 1
        assert ((sides >= 6 - 1e-3) & (sides < 12)).all(), sides
    r = invoke("data", "shapes", "--out", tmp_path / "x", "--object-size", "3", "10")
    assert r.exit_code == 2 and "expected 4 <= min < max" in r.output
    r = invoke("data", "shapes", "--out", tmp_path / "y", "--train", "1", "--val", "1",
               "--object-size", "8", "20")
    assert r.exit_code == 0 and "objects 8 to 19 px" in r.output
