import pytest
import torch

import ssdonnx
from ssdonnx.model import SSD, CheckpointError, load_weights
from ssdonnx.transforms import preprocess
from ssdonnx.testing.reference import SeedSSD

# The seed SSD300's parameters, name by name: VGG convs at these indices of ``vgg``.
VGG_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128),
             12: (256, 256), 14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512),
             24: (512, 512), 26: (512, 512), 28: (512, 512)}


def seed_ssd300_shapes(C=21):
    shapes = {}
    for i, (o, c) in VGG_CONVS.items():
        shapes[f"vgg.{i}.weight"], shapes[f"vgg.{i}.bias"] = [o, c, 3, 3], [o]
    shapes["vgg.31.weight"], shapes["vgg.31.bias"] = [1024, 512, 3, 3], [1024]
    shapes["vgg.33.weight"], shapes["vgg.33.bias"] = [1024, 1024, 1, 1], [1024]
    extras = [(256, 1024, 1), (512, 256, 3), (128, 512, 1), (256, 128, 3), (128, 256, 1),
              (256, 128, 3), (128, 256, 1), (256, 128, 3)]
    for i, (o, c, k) in enumerate(extras):
        shapes[f"extras.{i}.weight"], shapes[f"extras.{i}.bias"] = [o, c, k, k], [o]
    shapes["L2Norm.weight"] = [512]
    for i, (ch, n) in enumerate(zip([512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4])):
        shapes[f"loc.{i}.weight"], shapes[f"loc.{i}.bias"] = [n * 4, ch, 3, 3], [n * 4]
        shapes[f"conf.{i}.weight"], shapes[f"conf.{i}.bias"] = [n * C, ch, 3, 3], [n * C]
    return shapes


@pytest.fixture(scope="module")
def ssd300():
    torch.manual_seed(0)
    return SSD(ssdonnx.get_config("ssd300-voc")).eval()


def test_state_dict_names_and_shapes_are_the_seeds(ssd300):
    ours = {k: list(v.shape) for k, v in ssd300.state_dict().items()}
    expected = seed_ssd300_shapes()
    assert sorted(ours) == sorted(expected)
    for name, shape in expected.items():
        assert ours[name] == shape, name
    seed = {k: list(v.shape) for k, v in SeedSSD().state_dict().items()}
    assert seed == ours


def test_seed_checkpoint_loads_strictly_and_gives_same_outputs(ssd300, tmp_path):
    torch.manual_seed(1)
    seed_net = SeedSSD().eval()
    path = tmp_path / "ssd300_seed.pth"
    torch.save(seed_net.state_dict(), path)
    ours = load_weights(SSD(ssdonnx.get_config("ssd300-voc")), path).eval()
    x = torch.randn(2, 3, 300, 300) * 50
    with torch.no_grad():
        for a, b in zip(ours(x), seed_net(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_checkpoint_wrapped_in_a_dict_and_base_only(ssd300, tmp_path):
    torch.save({"epoch": 3, "state_dict": ssd300.state_dict()}, tmp_path / "wrapped.pth")
    torch.manual_seed(5)
    net = load_weights(SSD(ssdonnx.get_config("ssd300-voc")), tmp_path / "wrapped.pth")
    assert torch.equal(net.conf[0].weight, ssd300.conf[0].weight)
    # vgg16_reducedfc.pth style: the base alone, keys 0.weight ... 33.bias.
    torch.save(ssd300.vgg.state_dict(), tmp_path / "base.pth")
    torch.manual_seed(6)
    net = load_weights(SSD(ssdonnx.get_config("ssd300-voc")), tmp_path / "base.pth")
    assert torch.equal(net.vgg[33].weight, ssd300.vgg[33].weight)
    assert not torch.equal(net.conf[0].weight, ssd300.conf[0].weight)


def test_21_class_checkpoint_into_81_class_model_is_a_clear_error(ssd300, tmp_path):
    path = tmp_path / "voc.pth"
    torch.save(ssd300.state_dict(), path)
    coco = SSD(ssdonnx.get_config("ssd300-coco"))
    with pytest.raises(CheckpointError, match=r"voc\.pth.*mis-shaped: conf\.0\.bias \[84\] "
                                              r"\(model: \[324\]\)"):
        load_weights(coco, path)


def test_missing_and_unexpected_keys_are_listed(ssd300, tmp_path):
    state = dict(ssd300.state_dict())
    del state["L2Norm.weight"]
    state["head.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="missing: L2Norm.weight; unexpected: "
                                              "head.extra.weight"):
        load_weights(SSD(ssdonnx.get_config("ssd300-voc")), tmp_path / "odd.pth")


@pytest.mark.parametrize("content,message", [
    (b"", "truncated, corrupt or not a PyTorch checkpoint"),
    (b"hello, I am text", "truncated, corrupt or not a PyTorch checkpoint"),
])
def test_corrupt_checkpoints(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_weights(SSD(ssdonnx.get_config("ssd300-voc")), path)


def test_truncated_and_non_state_dict_checkpoints(ssd300, tmp_path):
    good = tmp_path / "good.pth"
    torch.save(ssd300.state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pth' is truncated, corrupt"):
        load_weights(SSD(ssdonnx.get_config("ssd300-voc")), cut)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_weights(SSD(ssdonnx.get_config("ssd300-voc")), tmp_path / "list.pth")


@pytest.mark.parametrize("name,P,C", [("ssd300-coco", 8732, 81), ("ssd512-voc", 24564, 21)])
def test_other_presets_forward(name, P, C):
    cfg = ssdonnx.get_config(name)
    with torch.no_grad():
        loc, conf = SSD(cfg).eval()(torch.zeros(1, 3, cfg.input_size, cfg.input_size))
    assert loc.shape == (1, P, 4) and conf.shape == (1, P, C)


def test_forward_has_no_phase_and_rejects_wrong_images(ssd300):
    with pytest.raises(ValueError, match=r"images: expected shape \[B, 3, 300, 300\]"):
        ssd300(torch.zeros(1, 3, 200, 200))
    with pytest.raises(TypeError, match="images: expected a floating-point tensor"):
        ssd300(torch.zeros(1, 3, 300, 300, dtype=torch.uint8))
    bad = torch.zeros(1, 3, 300, 300)
    bad[0, 1, 5, 7] = float("nan")
    with pytest.raises(ValueError, match=r"images: non-finite pixels .* at index \[0, 1, 5, 7\]"):
        ssd300(bad)


def test_xavier_initialisation(ssd300):
    w = ssd300.extras[1].weight
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    bound = (6 / (fan_in + fan_out)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert (ssd300.extras[1].bias == 0).all()
    assert (ssd300.L2Norm.weight == 20).all()


def test_preprocess_matches_the_seed_transform():
    import numpy as np
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    x = preprocess(rgb, size=None)
    # The seed: BGR image - (104, 117, 123), then [:, :, (2, 1, 0)] -> RGB order.
    bgr = rgb[..., ::-1].astype(np.float32) - np.array([104, 117, 123], dtype=np.float32)
    expected = torch.from_numpy(bgr[..., (2, 1, 0)].copy()).permute(2, 0, 1)
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(preprocess(Image.fromarray(rgb), size=None), expected)
    torch.testing.assert_close(preprocess(rgb[..., ::-1].copy(), size=None, bgr=True), expected)
    assert preprocess(rgb, size=300).shape == (3, 300, 300)
    # Bilinear with half-pixel centres: upsampling a constant image keeps it constant.
    flat = np.full((10, 10, 3), 200, np.uint8)
    torch.testing.assert_close(preprocess(flat)[0], torch.full((300, 300), 200 - 123.0))
    with pytest.raises(ValueError, match="image: expected an HWC array with 3 channels"):
        preprocess(np.zeros((4, 4, 5), np.uint8))


def test_transparent_pixels_are_white_not_what_lies_under_them():
    import numpy as np
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)            # black, fully transparent...
    rgba[:4, :, 3] = 255                            # ...but the top half is opaque black
    white = preprocess(np.full((8, 8, 3), 255, np.uint8), size=None)
    black = preprocess(np.zeros((8, 8, 3), np.uint8), size=None)
    for image in (rgba, Image.fromarray(rgba, "RGBA"),
                  Image.fromarray(rgba, "RGBA").convert("LA")):
        x = preprocess(image, size=None)
        torch.testing.assert_close(x[:, 4:], white[:, 4:])
        torch.testing.assert_close(x[:, :4], black[:, :4])


def test_slim_batch_norm_variant_keeps_the_layout():
    cfg = ssdonnx.get_config("ssd-shapes")
    net = SSD(cfg).eval()
    assert cfg.batch_norm and cfg.width == 0.25
    # conv4_3 is still the first source: after its BatchNorm and ReLU.
    assert isinstance(net.vgg[net.conv4_3_end - 1], torch.nn.ReLU)
    assert isinstance(net.vgg[net.conv4_3_end - 2], torch.nn.BatchNorm2d)
    assert net.L2Norm.weight.shape == (128,)
    with torch.no_grad():
        loc, conf = net(torch.zeros(2, 3, 96, 96))
    assert loc.shape == (2, cfg.num_priors, 4) and conf.shape == (2, cfg.num_priors, 4)
