"""int8 detectors: the shipped ssd-shapes detector quantized on a few pictures keeps the
float32 detector's layout, records how it was made, and agrees with float32."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import SHIPPED, invoke
from ssdonnx.deploy.onnxfile import read_info
from ssdonnx.deploy.parity import INT8_IOU, INT8_SCORE, compare_detection_sets
from ssdonnx.deploy.quantize import INT8_OPS, file_list_sha256


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    for f in sorted((SHIPPED / "samples").glob("*.jpg")):
        shutil.copy(f, folder / f.name)
    return folder


@pytest.fixture(scope="module")
def int8(tmp_path_factory, calibration):
    out = tmp_path_factory.mktemp("int8") / "detector-int8.onnx"
    result = invoke("export", "detector", "--config", "ssd-shapes", "--weights",
                    SHIPPED / "weights.pth", "--int8", "--calibration", calibration,
                    "--output", out)
    assert result.exit_code == 0, result.output
    return out, result.output


def signature(path):
    graph = onnx.load(str(path)).graph

    def values(vs):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in vs]
    return values(graph.input), values(graph.output)


@pytest.mark.slow
def test_int8_detector_has_the_float32_layout(int8, shapes_detector):
    path, output = int8
    assert signature(path) == signature(shapes_detector)
    assert "calibrating on 4 pictures" in output
    assert "int8 vs float32 on 4 pictures" in output and ": PASS" in output
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "NonMaxSuppression"} <= ops
    # The head stays float32: its inputs come from dequantized or float tensors.
    assert path.stat().st_size < shapes_detector.stat().st_size / 2


@pytest.mark.slow
def test_int8_metadata_says_how_it_was_made(int8, calibration):
    path, _ = int8
    info = read_info(path, "detector")
    files = sorted(calibration.glob("*.jpg"))
    assert info.precision == "int8"
    assert info.calibration == {"folder": str(calibration.resolve()), "pictures": 4,
                                "files_sha256": file_list_sha256(files, calibration)}
    assert info.float_source["weights"] == info.weights and info.weights.startswith("sha256:")
    assert info.float_source["quantized"] == list(INT8_OPS)
    assert len(info.float_source["network_sha256"]) == 64
    shown = invoke("info", path).output
    assert "precision:  int8" in shown and "4 pictures from" in shown
    assert "for CPUExecutionProvider" in shown


@pytest.mark.slow
def test_verify_and_evaluate_take_the_int8_detector(int8, tmp_path):
    from ssdonnx.training.shapes import write_shapes

    path, _ = int8
    r = invoke("verify", path, "--weights", SHIPPED / "weights.pth", "--provider", "cpu")
    assert r.exit_code == 0 and "int8 vs float32 on 4 pictures" in r.output, r.output
    data = write_shapes(tmp_path / "val", 0, 12, seed=77)
    r = invoke("verify", path, "--weights", SHIPPED / "weights.pth", "--provider", "cpu",
               "--data", data)
    assert r.exit_code == 0 and "on 12 pictures" in r.output, r.output
    r = invoke("evaluate", path, "--data", data, "--provider", "cpu", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{"):])["images"] == 12


def test_broken_calibration_folders_are_one_line_and_exit_2(tmp_path, calibration):
    def export(folder, *extra):
        return invoke("export", "detector", "--config", "ssd-shapes", "--weights",
                      SHIPPED / "weights.pth", "--int8", "--calibration", folder,
                      "--output", tmp_path / "x.onnx", *extra)

    (tmp_path / "empty").mkdir()
    for result, message in [
            (export(tmp_path / "empty"), "holds no pictures"),
            (export(tmp_path / "missing"), "no such folder"),
            (invoke("export", "detector", "--int8", "--output", tmp_path / "x.onnx"),
             "--int8 and --calibration go together"),
            (invoke("export", "loss", "--int8", "--calibration", calibration, "--output",
                    tmp_path / "x.onnx"), "--int8 is for `export detector`")]:
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    broken = tmp_path / "broken"
    shutil.copytree(calibration, broken)
    (broken / "zz.jpg").write_bytes(b"not a jpeg")
    result = export(broken)
    assert result.exit_code == 2 and "1 of 5 pictures cannot be read" in result.output \
        and "zz.jpg: not a readable picture" in result.output, result.output
    assert not (tmp_path / "x.onnx").exists()


def row(x1, y1, x2, y2, score, cls):
    return [x1, y1, x2, y2, score, cls]


def test_detection_sets_are_matched_by_class_and_iou():
    ref = [np.array([row(0, 0, 10, 10, 0.9, 1), row(20, 20, 30, 30, 0.8, 2),
                     row(50, 50, 60, 60, INT8_SCORE - 0.01, 1)], np.float32),
           np.zeros((0, 6), np.float32)]
    out = [np.array([row(0, 0, 10, 11, 0.85, 1),      # same object, score moved
                     row(20, 20, 30, 30, 0.8, 3),     # other class: no match
                     row(50, 50, 60, 60, 0.5, 1)],    # reference below the score bar
                    np.float32),
           np.array([row(0, 0, 5, 5, 0.7, 1)], np.float32)]
    a = compare_detection_sets(ref, out)
    assert (a.pictures, a.float32, a.int8, a.matched) == (2, 2, 4, 1)
    assert a.score_diff == pytest.approx(0.05, abs=1e-6)
    assert a.found_of_float32 == 0.5 and a.found_of_int8 == 0.25 and not a.passed
    # IoU just below the bound does not match.
    shifted = [np.array([row(0, 0, 10, 10, 0.9, 1)], np.float32)]
    w = 10 * (1 - INT8_IOU) / (1 + INT8_IOU) + 0.01     # IoU of a shifted square < bound
    moved = [np.array([row(w, 0, 10 + w, 10, 0.9, 1)], np.float32)]
    assert compare_detection_sets(shifted, moved).matched == 0
    assert compare_detection_sets(shifted, shifted).passed


def test_calibration_pictures_of_a_voc_set(tmp_path):
    from ssdonnx.deploy.quantize import calibration_pictures
    from ssdonnx.training.shapes import write_shapes

    root = write_shapes(tmp_path / "voc", 5, 3, seed=1)
    files = calibration_pictures(root, 6)
    assert len(files) == 6 and all(f.parent == root / "JPEGImages" for f in files)
    assert files == sorted(files)
    assert isinstance(files[0], Path)
