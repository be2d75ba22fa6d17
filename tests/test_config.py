import dataclasses
import json

import pytest
import torch

import ssdonnx
from ssdonnx.config import ConfigError, preset_names
from ssdonnx.testing.reference import dbox_reference

SEED_SSD300 = dict(input_size=300, num_classes=21, feature_maps=(38, 19, 10, 5, 3, 1),
                   steps=(8, 16, 32, 64, 100, 300), min_sizes=(30, 60, 111, 162, 213, 264),
                   max_sizes=(60, 111, 162, 213, 264, 315),
                   aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
                   variances=(0.1, 0.2), clip=True)


def test_ssd300_voc_is_the_seeds_config():
    cfg = ssdonnx.get_config("ssd300-voc")
    for key, value in SEED_SSD300.items():
        assert getattr(cfg, key) == value, key
    assert cfg.num_priors == 8732


@pytest.mark.parametrize("name,classes,priors", [
    ("ssd300-voc", 21, 8732), ("ssd300-coco", 81, 8732), ("ssd512-voc", 21, 24564),
    ("ssd-shapes", 4, 760)])
def test_presets(name, classes, priors):
    cfg = ssdonnx.get_config(name)
    assert cfg.num_classes == classes and cfg.num_priors == priors
    assert ssdonnx.default_boxes(cfg).shape == (priors, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 3


@pytest.mark.parametrize("name", ["ssd300-voc", "ssd300-coco", "ssd512-voc"])
def test_default_boxes_equal_seed_dbox(name):
    cfg = ssdonnx.get_config(name)
    ours = ssdonnx.default_boxes(cfg)
    ref = dbox_reference(cfg)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert ours.min() >= 0 and ours.max() <= 1


def test_config_file_round_trip(tmp_path):
    cfg = ssdonnx.get_config("ssd512-voc")
    path = tmp_path / "mine.json"
    path.write_text(cfg.to_json())
    assert ssdonnx.get_config(str(path)) == cfg
    assert "ssd300-voc" in preset_names()


def test_unknown_preset_names_the_presets():
    with pytest.raises(ConfigError, match="unknown config 'ssd999'.*ssd300-voc"):
        ssdonnx.get_config("ssd999")


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({"name": "x"}), "missing config keys"),
    (json.dumps({"bogus": 1}), "unknown config keys"),
])
def test_malformed_config_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        ssdonnx.get_config(str(path))


def test_feature_maps_must_match_the_network(tmp_path):
    data = ssdonnx.get_config("ssd300-voc").to_dict()
    data["feature_maps"] = [37, 19, 10, 5, 3, 1]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="do not match the network's source maps"):
        ssdonnx.get_config(str(path))


def test_lists_of_different_lengths(tmp_path):
    data = ssdonnx.get_config("ssd300-voc").to_dict()
    data["min_sizes"] = data["min_sizes"][:5]
    with pytest.raises(ConfigError, match="min_sizes has 5 entries"):
        ssdonnx.SSDConfig.from_dict(data)


def test_a_preset_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    # `ssdonnx export` writes models/<name>/; a folder named like a preset in the current
    # folder must not hide the preset.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mb1-ssd").mkdir()
    assert ssdonnx.get_config("mb1-ssd").network == "mb1-ssd"
