"""Hostile and broken files are refused in one line with exit status 2, resources stay
bounded, and real pictures are read right (EXIF orientation, bit depth)."""

import json
import zipfile

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

import ssdonnx
from conftest import SHIPPED, invoke
from ssdonnx.deploy.onnxfile import graph_metadata, set_metadata
from ssdonnx.pictures import read_picture
from ssdonnx.training.shapes import write_shapes


def assert_input_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().startswith("Error: ") or "\nError: " in result.output
    for f in fragments:
        assert f in result.output, result.output


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("shapes") / "tiny", 4, 4, seed=5)


def with_metadata(source, target, **changes):
    """A copy of an ONNX file with metadata entries replaced."""
    proto = onnx.load(str(source))
    set_metadata(proto, {f"ssdonnx.{k}": v for k, v in changes.items()})
    onnx.save(proto, str(target))
    return target


# --- ONNX files that lie ------------------------------------------------------------------

def fake_detector(path, rows):
    """A graph with a detector's inputs, outputs and metadata that returns ``rows``
    [200, 6] for every picture: what a hostile file with copied metadata can do."""
    nodes = [
        helper.make_node("Shape", ["images"], ["b"], start=0, end=1),
        helper.make_node("Concat", ["b", "k6"], ["shape"], axis=0),
        helper.make_node("Expand", ["rows"], ["detections"], ),
        helper.make_node("Expand", ["count", "b"], ["num_detections"]),
    ]
    nodes[2].input.append("shape")
    graph = helper.make_graph(
        nodes, "fake",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["B", 3, 96, 96])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["B", 200, 6]),
         helper.make_tensor_value_info("num_detections", TensorProto.INT64, ["B"])],
        [onnx.numpy_helper.from_array(np.asarray(rows, np.float32)[None], "rows"),
         onnx.numpy_helper.from_array(np.array([200, 6], np.int64), "k6"),
         onnx.numpy_helper.from_array(np.array(len(rows), np.int64), "count")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    thresholds = {"conf_thresh": 0.01, "top_k": 200, "nms_thresh": 0.45, "max_detections": 200}
    set_metadata(proto, graph_metadata("detector", ssdonnx.get_config("ssd-shapes"), None,
                                       thresholds))
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("bad, what, shown", [
    ((0.1, 0.1, 0.5, 0.5, 0.9, 99.0), "class outside", "99.0]]"),
    ((0.1, 0.1, 0.5, 0.5, 0.9, 1.5), "class outside", "1.5]]"),
    ((0.1, 0.1, np.inf, 0.5, 0.9, 1.0), "non-finite", "inf")])
def test_detections_outside_the_contract_are_refused(tmp_path, bad, what, shown):
    rows = np.tile(np.float32([0, 0, 0, 0, 0, -1]), (200, 1))
    rows[0] = bad
    path = fake_detector(tmp_path / "fake.onnx", rows[:1].tolist() + rows[1:].tolist())
    # (the count says 200 rows are real: they must all be valid)
    Image.new("RGB", (40, 30)).save(tmp_path / "p.png")
    assert_input_error(invoke("detect", path, tmp_path / "p.png", "--out", tmp_path / "out",
                              "--score", "0"), "outside its contract", what, shown)
    assert not (tmp_path / "out" / "detections.json").exists()


def test_external_data_is_flagged_and_never_run(shapes_detector, tmp_path):
    proto = onnx.load(str(shapes_detector))
    onnx.save_model(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    assert "WARNING" in invoke("info", tmp_path / "ext.onnx").output
    Image.new("RGB", (40, 30)).save(tmp_path / "p.png")
    for args in (["detect", tmp_path / "ext.onnx", tmp_path / "p.png", "--out", tmp_path / "o"],
                 ["verify", tmp_path / "ext.onnx"],
                 ["evaluate", tmp_path / "ext.onnx", "--data", tmp_path]):
        assert_input_error(invoke(*args), "external data")


def test_metadata_that_lies_about_the_graph(shapes_detector, exported, tmp_path):
    voc = ssdonnx.get_config("ssd300-voc").to_json()
    lying = with_metadata(shapes_detector, tmp_path / "lying.onnx", config=voc)
    assert_input_error(invoke("verify", lying), "images has shape", "96", "300")
    # a loss graph whose metadata claims 81 classes: conf does not fit
    coco = ssdonnx.get_config("ssd300-coco").to_json()
    lying = with_metadata(exported["loss"], tmp_path / "loss.onnx", config=coco)
    assert_input_error(invoke("verify", lying), "conf has shape")
    # a declared size of 10^12 pixels
    proto = onnx.load(str(shapes_detector))
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 10 ** 12
    onnx.save(proto, str(tmp_path / "huge.onnx"))
    assert_input_error(invoke("verify", tmp_path / "huge.onnx"), "images has shape")


@pytest.mark.parametrize("field, value, message", [
    ("config", "[" * 40_000 + "]" * 40_000, "nested too deeply"),
    ("thresholds", "[0.5, 200]", "must be an object"),
    ("thresholds", '{"top_k": 1.5}', "top_k must be a int"),
    ("precision", "int8", "ssdonnx.calibration must hold"),
    ("kind", "trojan", "not one of model, detector, loss"),
])
def test_metadata_of_the_wrong_shape(shapes_detector, tmp_path, field, value, message):
    bad = with_metadata(shapes_detector, tmp_path / "bad.onnx", **{field: value})
    for command in ("info", "verify"):
        assert_input_error(invoke(command, bad), message)


def test_control_characters_in_metadata_are_escaped(shapes_detector, tmp_path):
    data = ssdonnx.get_config("ssd-shapes").to_dict()
    data["name"] = "evil\x1b[2J\x07name"
    bad = with_metadata(shapes_detector, tmp_path / "bad.onnx", config=json.dumps(data),
                        version="1\x1b[31m" + "x" * 500)
    out = invoke("info", bad).output
    assert "\x1b" not in out and "\x07" not in out and "evil\\x1b[2J\\x07name" in out
    assert max(len(line) for line in out.splitlines()) < 250


# --- configs, options, checkpoints --------------------------------------------------------

def test_configs_are_bounded_and_deep_json_refused(tmp_path):
    data = ssdonnx.get_config("ssd300-voc").to_dict()
    for key, value, message in (("num_classes", 10 ** 9, "num_classes must be a whole number"),
                                ("width", 300.0, "width must be at most"),
                                ("input_size", 10 ** 6, "input_size must be"),
                                ("variances", [0.1, 0.2, 0.3], "two numbers")):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({**data, key: value}))
        assert_input_error(invoke("export", "loss", "--config", path, "--output",
                                  tmp_path / "x.onnx"), message)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert_input_error(invoke("export", "loss", "--config", tmp_path / "deep.json",
                              "--output", tmp_path / "x.onnx"), "nested too deeply")
    assert not (tmp_path / "x.onnx").exists()


def test_opset_99_is_refused_before_any_file(tmp_path):
    assert_input_error(invoke("export", "loss", "--config", "ssd-shapes", "--opset", "99",
                              "--output", tmp_path / "x.onnx"), "opset: 99 is not supported")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["detect", "DET", "P", "--score", "nan"], "nan is not a finite number"),
    (["train", "--config", "ssd-shapes", "--data", "D", "--out", "O", "--lr", "nan"],
     "nan is not a finite number"),
    (["detect", "DET", "P", "--batch", "100000"], "--batch"),
])
def test_nan_and_absurd_options(shapes_detector, tiny, tmp_path, args, message):
    Image.new("RGB", (40, 30)).save(tmp_path / "p.png")
    names = {"DET": shapes_detector, "P": tmp_path / "p.png", "D": tiny, "O": tmp_path / "o"}
    result = invoke(*[names.get(a, a) for a in args])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.slow
def test_checkpoints_that_are_not_what_they_say(tiny, tmp_path):
    state = torch.load(SHIPPED / "weights.pth", weights_only=True)
    state["conf.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    assert_input_error(invoke("export", "model", "--config", "ssd-shapes", "--weights",
                              tmp_path / "nan.pth", "--output", tmp_path / "m.onnx"),
                       "corrupt: NaN or inf in conf.0.weight")
    assert_input_error(invoke("train", "--config", "ssd-shapes", "--data", tiny, "--out",
                              tmp_path / "run", "--resume", SHIPPED / "weights.pth"),
                       "is not a resume file")
    with zipfile.ZipFile(tmp_path / "bomb.pth", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb/data/0", "w", force_zip64=True) as f:
            for _ in range(160):
                f.write(bytes(1 << 24))                  # 2.5 GiB of zeros, 2.5 MB packed
    assert_input_error(invoke("export", "model", "--config", "ssd-shapes", "--weights",
                              tmp_path / "bomb.pth", "--output", tmp_path / "m.onnx"),
                       "not a checkpoint")


# --- npz inputs: checked from their headers -----------------------------------------------

def npz_member(archive, name, shape, dtype="<f4", body=b""):
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode()
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    archive.writestr(name, b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body)


def test_npz_arrays_are_checked_from_their_headers(exported, tmp_path):
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        npz_member(archive, "loc.npy", (100_000, 100_000, 4))
        npz_member(archive, "conf.npy", (1, 8732, 21))
        npz_member(archive, "targets.npy", (1, 0, 5))
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "huge.npz"),
                       "declares", "GiB")
    # A zip bomb: 1 GiB of zeros behind a header that declares exactly that.
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        npz_member(archive, "loc.npy", (32768, 8732, 4))
        npz_member(archive, "conf.npy", (32768, 8732, 21))
        npz_member(archive, "targets.npy", (32768, 0, 5))
    assert_input_error(invoke("loss", exported["loss"], "--inputs", tmp_path / "bomb.npz"),
                       "declares")


# --- VOC data ---------------------------------------------------------------------------

@pytest.fixture
def voc(tmp_path, tiny):
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(tiny, root)
    return root


def corrupt(root, mutate):
    xml = root / "Annotations" / "val_000004.xml"
    xml.write_text(mutate(xml.read_text()))
    return xml


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.replace("<width>160</width>", "<width>0</width>"), "picture size is 0 x 120"),
    (lambda t: t.replace("<name>", "<nom>").replace("</name>", "</nom>"), "<name> is missing"),
    (lambda t: t.replace("<difficult>0</difficult>", "<difficult>yes</difficult>"),
     "difficult is 'yes'"),
    (lambda t: t.replace("<xmax>", "<xmax>9").replace("</xmax>", "0</xmax>", 1),
     "lies outside the 160 x 120 picture"),
])
def test_broken_annotations_name_their_file(voc, mutate, message, shapes_detector):
    xml = corrupt(voc, mutate)
    for args in (["evaluate", shapes_detector, "--data", voc],
                 ["train", "--config", "ssd-shapes", "--data", voc, "--out", voc / "run",
                  "--image-set", "val"]):
        assert_input_error(invoke(*args), str(xml), message)


def test_pictures_that_cannot_be_read(voc, shapes_detector, tmp_path):
    picture = voc / "JPEGImages" / "val_000005.jpg"
    picture.write_bytes(picture.read_bytes()[:300])              # truncated
    assert_input_error(invoke("evaluate", shapes_detector, "--data", voc), str(picture),
                       "not a readable picture")
    picture.write_bytes(b"<html>not a picture</html>")
    # ... refused when the set is opened, before any DataLoader worker: one line
    result = invoke("train", "--config", "ssd-shapes", "--data", voc, "--out", tmp_path / "r",
                    "--image-set", "val", "--workers", "1", "--batch", "4")
    assert_input_error(result, str(picture), "not a readable picture")
    assert len(result.output.strip().splitlines()[-1]) < 400


def bomb_png(path, side=100_000):
    """A PNG whose header claims side x side pixels (Pillow reads the header only)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side,
                                                                       8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_decompression_bombs_are_named_everywhere(voc, shapes_detector, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("RGB", (40, 30)).save(folder / "fine.png")
    bomb = bomb_png(folder / "bomb.png")
    result = invoke("detect", shapes_detector, folder, "--out", tmp_path / "out")
    assert_input_error(result, f"skipped {bomb}", "a decompression bomb", "1 of 2 pictures")
    assert (tmp_path / "out" / "fine.png").exists()
    assert_input_error(invoke("export", "detector", "--config", "ssd-shapes", "--weights",
                              SHIPPED / "weights.pth", "--int8", "--calibration", folder,
                              "--output", tmp_path / "i8.onnx"), "decompression bomb")
    (voc / "JPEGImages" / "val_000006.jpg").unlink()
    bomb_png(voc / "JPEGImages" / "val_000006.png")
    assert_input_error(invoke("evaluate", shapes_detector, "--data", voc), "val_000006.png",
                       "decompression bomb")


@pytest.mark.parametrize("line", ["../outside", "/etc/passwd", "sub/val_000004"])
def test_image_set_ids_stay_inside_the_data_set(voc, shapes_detector, line):
    (voc / "ImageSets" / "Main" / "val.txt").write_text(f"val_000004\n{line}\n")
    assert_input_error(invoke("evaluate", shapes_detector, "--data", voc), "line 2",
                       "is not an id")


def test_an_empty_image_set_is_refused(voc, shapes_detector):
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n")
    assert_input_error(invoke("evaluate", shapes_detector, "--data", voc), "holds no pictures")


# --- pictures as people have them ---------------------------------------------------------

def test_exif_orientation_is_applied(shapes_detector, tmp_path):
    rng = np.random.default_rng(1)
    upright = Image.fromarray(rng.integers(0, 255, (200, 100, 3), dtype=np.uint8))  # 100 x 200
    stored = upright.transpose(Image.Transpose.ROTATE_90)                            # 200 x 100
    exif = Image.Exif()
    exif[0x0112] = 6                          # "rotate 90 CW to display"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    assert read_picture(tmp_path / "phone.jpg").size == (100, 200)
    result = invoke("detect", shapes_detector, tmp_path / "phone.jpg", "--out",
                    tmp_path / "out", "--score", "0.05")
    assert result.exit_code == 0, result.output
    entry = json.loads((tmp_path / "out" / "detections.json").read_text())[0]
    assert (entry["width"], entry["height"]) == (100, 200)


def test_deep_pictures_are_scaled_or_refused(tmp_path):
    grey = np.full((20, 30), 32896, np.uint16)                   # 128 * 257: mid grey
    Image.fromarray(grey).save(tmp_path / "g16.png")
    array = np.asarray(read_picture(tmp_path / "g16.png"))
    assert array.shape == (20, 30, 3) and (array == 128).all()   # not clipped to white
    Image.fromarray(grey.astype(np.int32)).save(tmp_path / "g32.tif")
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "f.tif")
    for name, kind in (("g32.tif", "32-bit integer"), ("f.tif", "floating-point")):
        with pytest.raises(ssdonnx.DataError, match=f"{name}: a {kind} picture"):
            read_picture(tmp_path / name)


def test_small_pictures_are_drawn_legibly_but_bounded(shapes_detector, tmp_path):
    Image.new("RGB", (1, 1000), (90, 90, 90)).save(tmp_path / "thin.png")
    result = invoke("detect", shapes_detector, tmp_path / "thin.png", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert max(Image.open(tmp_path / "o" / "thin.png").size) <= 4096


# --- the Python API -----------------------------------------------------------------------

def test_empty_batches():
    cfg = ssdonnx.get_config("ssd-shapes")
    dbox = ssdonnx.default_boxes(cfg)
    P, C = cfg.num_priors, cfg.num_classes
    loss = ssdonnx.MultiBoxLoss()((torch.zeros(0, P, 4), torch.zeros(0, P, C), dbox),
                                  torch.zeros(0, 3, 5))
    assert [float(v) for v in loss] == [0.0, 0.0]
    detections, num = ssdonnx.detect(torch.zeros(0, P, 4), torch.zeros(0, P, C), dbox)
    assert detections.shape == (0, 200, 6) and num.shape == (0,)
    net = ssdonnx.SSD(cfg).eval()
    assert net(torch.zeros(0, 3, 96, 96))[1].shape == (0, P, C)
    assert ssdonnx.SSDDetector(net, cfg)(torch.zeros(0, 3, 96, 96))[0].shape == (0, 200, 6)


@pytest.mark.parametrize("make, message", [
    (lambda: ssdonnx.MultiBoxLoss(neg_pos=2 ** 62), "neg_pos"),
    (lambda: ssdonnx.MultiBoxLoss(neg_pos=-1), "neg_pos"),
    (lambda: ssdonnx.MultiBoxLoss(neg_pos=2.5), "neg_pos"),
    (lambda: ssdonnx.MultiBoxLoss(jaccard_thresh=float("nan")), "jaccard_thresh"),
    (lambda: ssdonnx.MultiBoxLoss(variances=(0, 0)), "variances"),
    (lambda: ssdonnx.MultiBoxLoss(variances=(0.1, 0.2, 0.3)), "variances"),
    (lambda: ssdonnx.DetectionHead(torch.rand(10, 4) + 0.1, top_k=-1), "top_k"),
    (lambda: ssdonnx.detect(torch.zeros(1, 10, 4), torch.zeros(1, 10, 3),
                            torch.rand(10, 4) + 0.1, top_k=0), "top_k"),
    (lambda: ssdonnx.match(torch.rand(1, 1, 4).sort(-1).values, torch.zeros(1, 1),
                           torch.ones(10, 4, dtype=torch.long)), "dbox: expected a floating"),
    (lambda: ssdonnx.match(torch.rand(1, 1, 4).sort(-1).values, torch.zeros(1, 1),
                           torch.ones(10, 3)), "dbox: expected shape [P, 4]"),
    (lambda: ssdonnx.match(torch.rand(1, 1, 4).sort(-1).values, torch.zeros(1, 1),
                           torch.zeros(10, 4)), "width or height <= 0"),
])
def test_settings_and_default_boxes_are_checked(make, message):
    with pytest.raises(ssdonnx.InputError, match=message.replace("[", r"\[")):
        make()


@pytest.mark.parametrize("scale", [1e30, -1e30])
def test_losses_are_finite_for_inputs_up_to_1e30(exported, scale):
    gen = torch.Generator().manual_seed(3)
    loc = torch.randn(4, 8732, 4, generator=gen).sign() * scale
    conf = torch.randn(4, 8732, 21, generator=gen).sign() * scale
    targets = torch.tensor([[[0.1, 0.1, 0.6, 0.5, 3.0]]]).expand(4, 1, 5)
    eager = ssdonnx.MultiBoxLoss()((loc, conf, ssdonnx.default_boxes(
        ssdonnx.get_config("ssd300-voc"))), targets)
    out = ssdonnx.session(exported["loss"], "cpu").run(loc=loc, conf=conf, targets=targets)
    for value in [*eager, *out.values()]:
        assert np.isfinite(float(value))
