"""Your own data, without writing a config: a folder of pictures with VOC XMLs of two
made-up classes (or the same as COCO JSON) is split, trained on, exported, used to detect
and evaluated; fine-tuning across class counts says what it loaded; COCO AP agrees with
VOC mAP where they measure the same thing."""

import csv
import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

import ssdonnx
from conftest import SHIPPED, invoke
from ssdonnx.config import describe_priors, paper_box_sizes, with_input_size
from ssdonnx.training.evaluate import coco_map, voc_map
from ssdonnx.training.shapes import write_shapes
from ssdonnx.training.train import Schedule

NEW_NAMES = {"circle": "cat", "square": "dog", "triangle": "dog"}


def labelimg_folder(source, target):
    """A VOC set as labelling tools write one: images/ + annotations/, no split, and
    the shapes renamed to two made-up classes."""
    shutil.copytree(source / "JPEGImages", target / "images")
    (target / "annotations").mkdir()
    for xml in (source / "Annotations").glob("*.xml"):
        tree = ET.parse(xml)
        for name in tree.getroot().iter("name"):
            name.text = NEW_NAMES[name.text]
        tree.write(target / "annotations" / xml.name)
    return target


def coco_file(voc_folder, path):
    """The same annotations as a COCO instances file beside an images/ folder."""
    from ssdonnx.training.data import voc_objects

    images, annotations = [], []
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    for i, xml in enumerate(sorted((voc_folder / "annotations").glob("*.xml"))):
        (W, H), objects = voc_objects(xml)
        images.append({"id": i, "file_name": f"{xml.stem}.jpg", "width": W, "height": H})
        for name, (x1, y1, x2, y2), _ in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i, "iscrowd": 0,
                                "category_id": 1 if name == "cat" else 2,
                                "bbox": [x1 - 1, y1 - 1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1)})
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    shapes = write_shapes(root / "shapes", 24, 8, seed=11)
    folder = labelimg_folder(shapes, root / "photos")
    shutil.copytree(folder / "images", root / "coco" / "images")
    coco_file(folder, root / "coco" / "instances.json")
    return folder


def run(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_two_made_up_classes_from_photos_to_detections(photos, tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    out = run("data", "split", data, "--val", "0.25", "--seed", "3")
    assert "24 train and 8 val" in out
    lists = data / "ImageSets" / "Main"
    assert len(lists.joinpath("val.txt").read_text().split()) == 8
    out = run("train", "--config", "ssd-shapes", "--data", data, "--out", tmp_path / "run",
              "--epochs", "2", "--batch", "8", "--val-every", "1", "--augment", "none")
    assert "classes from" in out and "cat, dog" in out and "val mAP" in out
    run_dir = tmp_path / "run"
    assert {p.name for p in run_dir.iterdir()} >= {"last.pth", "best.pth", "log.csv",
                                                   "run-epoch2.pth"}
    rows = list(csv.DictReader((run_dir / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and all(r["val_map"] for r in rows)
    # No config anywhere from here on: the checkpoint carries it.
    run("export", "detector", "--weights", run_dir / "best.pth", "--output",
        tmp_path / "det.onnx")
    info = ssdonnx.read_info(tmp_path / "det.onnx")
    assert info.config.class_names == ("cat", "dog") and info.config.num_classes == 3
    run("detect", tmp_path / "det.onnx", data / "images", "--out", tmp_path / "seen",
        "--score", "0.01")
    labels = {d["label"] for entry in json.loads((tmp_path / "seen" / "detections.json")
                                                  .read_text()) for d in entry["detections"]}
    assert labels and labels <= {"cat", "dog"}
    for model in (run_dir / "best.pth", tmp_path / "det.onnx"):
        out = run("evaluate", model, "--data", data, "--provider", "cpu")
        assert "cat" in out and "dog" in out and "mAP" in out


@pytest.mark.slow
def test_the_same_data_as_coco_json(photos, tmp_path):
    coco = photos.parent / "coco" / "instances.json"
    run("data", "split", coco, "--val", "0.25", "--seed", "3", "--force")
    run("train", "--config", "ssd-shapes", "--data", coco, "--out", tmp_path / "run",
        "--epochs", "1", "--batch", "8")
    out = run("evaluate", tmp_path / "run" / "run-epoch1.pth", "--data", coco, "--coco")
    assert "AP@[.5:.95]" in out and "AP50" in out and "cat" in out
    result = invoke("evaluate", tmp_path / "run" / "run-epoch1.pth", "--data", coco, "--coco",
                    "--json")
    report = json.loads(result.stdout)
    assert set(report["coco"]) >= {"ap", "ap50", "ap75", "per_class"}


def test_coco_ap50_agrees_with_voc_map():
    rng = np.random.default_rng(4)
    detections, truths, sizes = [], [], []
    for _ in range(40):
        n = int(rng.integers(1, 5))
        size = rng.uniform(0.1, 0.4, (n, 2))
        x1y1 = rng.uniform(0, 1, (n, 2)) * (1 - size)
        labels = rng.integers(0, 3, (n, 1))
        truth = np.concatenate([x1y1, x1y1 + size, labels], 1).astype(np.float32)
        truths.append((truth, np.zeros(n, bool)))
        found = truth[:, :4] + rng.normal(0, 0.03, (n, 4))        # near the truths
        false = rng.uniform(0, 0.6, (2, 2))
        rows = np.concatenate([
            np.concatenate([found, rng.uniform(0.3, 1, (n, 1)), labels + 1], 1),
            np.concatenate([false, false + 0.3, rng.uniform(0, 0.6, (2, 1)),
                            rng.integers(1, 4, (2, 1))], 1)])
        detections.append(rows.astype(np.float32))
        sizes.append((320, 240))
    names = ("a", "b", "c")
    voc = voc_map(detections, truths, names)
    coco = coco_map(detections, truths, sizes, names)
    assert 0.3 < voc.map < 0.95                        # a case with something to measure
    assert abs(coco.ap50 - voc.map) < 0.02, (coco.ap50, voc.map)
    assert coco.ap < coco.ap50                         # stricter IoUs count too


@pytest.mark.slow
def test_fine_tuning_to_two_classes_says_what_it_initialised(photos, tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    out = run("train", "--config", "ssd-shapes", "--data", data, "--image-set", "all",
              "--out", tmp_path / "run", "--epochs", "1", "--batch", "8", "--weights",
              SHIPPED / "weights.pth")
    # ssd-shapes has four source maps: the class heads' weights and biases, 8 tensors
    assert "loaded 112 tensors" in out and "initialised 8" in out and "conf.0" in out, out
    assert "loc.0" not in out.split("initialised")[1].splitlines()[0]


def test_an_imagenet_base_network_file_loads_into_the_base(tmp_path):
    # A made-up file of vgg16_reducedfc.pth's layout: the VGG base alone, keys 0.weight
    # ... 33.bias (the seed code base starts from it).
    from ssdonnx.model import load_matching, make_vgg

    torch.save(make_vgg().state_dict(), tmp_path / "vgg16_reducedfc.pth")
    net = ssdonnx.SSD(ssdonnx.get_config("ssd300-voc"))
    report = load_matching(net, tmp_path / "vgg16_reducedfc.pth")
    assert len(report.loaded) == 30 and all(k.startswith("vgg.") for k in report.loaded)
    assert any(k.startswith("conf.") for k in report.initialised) and not report.ignored
    torch.testing.assert_close(net.vgg[0].weight, make_vgg().state_dict()["0.weight"]
                               * 0 + torch.load(tmp_path / "vgg16_reducedfc.pth")["0.weight"])
    with pytest.raises(ssdonnx.CheckpointError, match="none of its tensors fit"):
        load_matching(ssdonnx.build_model(ssdonnx.get_config("mb1-ssd")),
                      tmp_path / "vgg16_reducedfc.pth")


def test_schedules():
    step = Schedule(1e-3, "step", warmup=1, steps=(3, 5))
    assert step.rate(0, 0, 10, 6) == pytest.approx(1e-4)         # warm-up: 1/10 of an epoch
    assert step.rate(1, 0, 10, 6) == pytest.approx(1e-3)
    assert step.rate(3, 0, 10, 6) == pytest.approx(1e-4)
    assert step.rate(5, 9, 10, 6) == pytest.approx(1e-5)
    cosine = Schedule(1e-3, "cosine")
    assert cosine.rate(0, 0, 10, 4) == pytest.approx(1e-3) and cosine.rate(3, 9, 10, 4) < 1e-5
    with pytest.raises(ssdonnx.InputError, match="lr steps"):
        Schedule(1e-3, "step", steps=(5, 3))


def test_input_size_derives_the_priors_and_the_config_command_writes_them(tmp_path):
    cfg = with_input_size(ssdonnx.get_config("ssd300-voc"), 512)
    assert cfg.feature_maps == (64, 32, 16, 8, 6, 4) and cfg.steps[0] == 8
    assert list(cfg.min_sizes), list(cfg.max_sizes) == paper_box_sizes(512, 6)
    assert paper_box_sizes(300, 6) == ([30.0, 60.0, 111.0, 162.0, 213.0, 264.0],
                                       [60.0, 111.0, 162.0, 213.0, 264.0, 315.0])
    out = run("config", "ssd-shapes", "--classes", "cat,dog", "--input-size", "128",
              "--out", tmp_path / "mine.json")
    assert "default boxes for a 128 x 128 input" in out
    mine = ssdonnx.get_config(tmp_path / "mine.json")
    assert mine.num_classes == 3 and mine.class_names == ("cat", "dog")
    assert mine.input_size == 128 and mine.feature_maps == (16, 8, 4, 2)
    assert describe_priors(mine).splitlines()[-1].startswith(f"{mine.num_priors} default")
    result = invoke("config", "ssd300-voc", "--input-size", "100")
    assert result.exit_code == 2 and "the smallest it takes is 268" in result.output


@pytest.mark.slow
def test_train_options_input_size_keep_every_threads_and_sets(photos, tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(photos, data)
    ssdonnx.training.data.write_split(data, 0.25, seed=1)
    out = run("train", "--config", "ssd-shapes", "--data", data, "--out", tmp_path / "run",
              "--image-set", "train,val", "--input-size", "128", "--epochs", "3", "--batch",
              "16", "--keep-every", "2", "--threads", "1", "--schedule", "step",
              "--lr-steps", "2", "--warmup", "1", "--augment", "none")
    assert "with 1 threads" in out and "input 128" in out
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"run-epoch2.pth", "run-epoch3.pth", "last.pth"} <= names
    assert "run-epoch1.pth" not in names
    state = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert json.loads(state["config"])["input_size"] == 128
    lr = [float(r["lr"]) for r in csv.DictReader((tmp_path / "run" / "log.csv").open())]
    assert lr[2] == pytest.approx(1e-4)            # after the step at epoch 2


def test_a_run_needs_a_config_or_a_run_to_resume(tmp_path):
    result = invoke("train", "--data", tmp_path, "--out", tmp_path / "run", "--epochs", 1)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "a config is needed to start a run (--config)" in result.output
    assert "--resume" in result.output
    assert not (tmp_path / "run").exists()
