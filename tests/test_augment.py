"""The SSD paper's augmentation: invariants over many random draws.

Labels are set to each box's index, so every output box can be traced to its input box.
"""

import numpy as np
import pytest

from ssdonnx.training import augment as A

DRAWS = 300


def picture(seed, n, W=160, H=120):
    """A random picture and n random pixel boxes inside it, labels 0..n-1."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3)).astype(np.float32)
    size = rng.uniform(4, 60, (n, 2))
    x1y1 = rng.uniform(0, 1, (n, 2)) * ([W, H] - size)
    boxes = np.concatenate([x1y1, x1y1 + size], 1).astype(np.float32)
    return image, boxes, np.arange(n, dtype=np.float32)


def iou(boxes, patch):
    return A._iou(boxes, np.asarray(patch, np.float32)[None])[0]


@pytest.mark.parametrize("seed", range(0, DRAWS, DRAWS // 6))
def test_sample_crop_keeps_exactly_the_boxes_whose_centre_is_inside(seed):
    for s in range(seed, seed + DRAWS // 6):
        check_sample_crop(s)


def check_sample_crop(seed):
    image, boxes, labels = picture(seed, seed % 5 + 1)
    rng = np.random.default_rng(seed)
    out, kept, kept_labels, patch, min_iou = A.sample_crop(image, boxes, labels, rng)
    if patch is None:                                  # the whole-image option
        assert out is image and kept is boxes
        return
    x1, y1, x2, y2 = patch
    h, w = y2 - y1, x2 - x1
    assert out.shape == (h, w, 3)
    np.testing.assert_array_equal(out, image[int(y1):int(y2), int(x1):int(x2)])
    assert A.CROP_SIDE_RANGE[0] * 160 - 1 <= w <= 160 and A.CROP_SIDE_RANGE[0] * 120 - 1 <= h
    assert A.CROP_ASPECT_RANGE[0] * 0.9 <= h / w <= A.CROP_ASPECT_RANGE[1] * 1.1
    # The chosen minimum IoU holds for some object of the original picture.
    assert min_iou in A.CROP_MIN_IOUS and iou(boxes, patch).max() >= min_iou
    # Kept: every box whose centre is strictly inside, none other, labels with their boxes.
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = ((centres > patch[:2]) & (centres < patch[2:])).all(1)
    assert inside.any()
    np.testing.assert_array_equal(kept_labels, labels[inside])
    expected = np.concatenate([np.maximum(boxes[inside, :2], patch[:2]),
                               np.minimum(boxes[inside, 2:], patch[2:])], 1) - [x1, y1, x1, y1]
    np.testing.assert_allclose(kept, expected, atol=1e-4)
    assert (kept[:, :2] >= 0).all() and (kept[:, 2] <= w).all() and (kept[:, 3] <= h).all()
    assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()


def test_every_crop_option_is_drawn():
    image, boxes, labels = picture(0, 2)
    boxes[0] = [20, 10, 120, 100]            # large enough for a patch of IoU 0.9
    rng = np.random.default_rng(0)
    seen = {A.sample_crop(image, boxes, labels, rng)[4] for _ in range(400)}
    assert seen == set(A.CROP_MIN_IOUS)


def test_expand_never_loses_a_box_and_keeps_the_picture():
    for seed in range(100):
        check_expand(seed)


def check_expand(seed):
    image, boxes, _ = picture(seed, 3)
    out, moved = A.expand(image, boxes, np.random.default_rng(seed))
    assert len(moved) == len(boxes)
    if out is image:
        np.testing.assert_array_equal(moved, boxes)
        return
    H, W = image.shape[:2]
    assert W <= out.shape[1] <= A.EXPAND_MAX_RATIO * W and H <= out.shape[0]
    left, top = np.round((moved - boxes)[0, :2])
    np.testing.assert_allclose(moved - boxes, [[left, top, left, top]] * 3, atol=1e-4)
    np.testing.assert_array_equal(out[int(top):int(top) + H, int(left):int(left) + W], image)
    # Outside the picture: the mean colour.
    mask = np.ones(out.shape[:2], bool)
    mask[int(top):int(top) + H, int(left):int(left) + W] = False
    if mask.any():
        assert (out[mask] == np.float32(A.MEAN_RGB)).all()


def test_mirror_flips_boxes_with_the_picture():
    image, boxes, _ = picture(1, 4)
    for seed in range(20):
        out, flipped = A.mirror(image, boxes, np.random.default_rng(seed))
        if out is image:
            continue
        np.testing.assert_array_equal(out, image[:, ::-1])
        np.testing.assert_allclose(flipped[:, [0, 2]], 160 - boxes[:, [2, 0]])
        np.testing.assert_array_equal(flipped[:, [1, 3]], boxes[:, [1, 3]])
        return
    pytest.fail("no draw mirrored")


def test_hsv_round_trip_and_photometric_range():
    image, _, _ = picture(2, 1)
    np.testing.assert_allclose(A._hsv_to_rgb(A._rgb_to_hsv(image)), image, atol=1e-3)
    grey = np.full((2, 2, 3), 77, np.float32)
    hsv = A._rgb_to_hsv(grey)
    assert (hsv[..., 0] == 0).all() and (hsv[..., 1] == 0).all() and (hsv[..., 2] == 77).all()
    red = A._rgb_to_hsv(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.float32))
    np.testing.assert_allclose(red[0, :, 0], [0, 120, 240])
    changed = 0
    for seed in range(30):
        out = A.photometric_distort(image, np.random.default_rng(seed))
        assert out.shape == image.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 255
        changed += not np.allclose(out, image, atol=1e-2)
    assert changed > 20          # 1/16 of the draws change nothing


@pytest.mark.parametrize("name", ["ssd", "simple"])
def test_pipelines_keep_boxes_inside_and_labels_with_boxes(name):
    augment = A.AUGMENTATIONS[name]()
    for seed in range(200):
        image, boxes, labels = picture(seed, seed % 4 + 1)
        targets = np.concatenate([boxes / [160, 120, 160, 120], labels[:, None]], 1)
        out, t = augment(image.astype(np.uint8), targets.astype(np.float32),
                         np.random.default_rng(seed))
        assert out.ndim == 3 and out.shape[2] == 3 and out.flags.c_contiguous
        assert t.dtype == np.float32 and t.shape[1] == 5 and len(t) >= 1
        assert (t[:, :4] >= 0).all() and (t[:, :4] <= 1 + 1e-6).all()
        assert (t[:, 2] > t[:, 0]).all() and (t[:, 3] > t[:, 1]).all()
        assert len(set(t[:, 4])) == len(t) and set(t[:, 4]) <= set(labels)


@pytest.mark.parametrize("name", ["ssd", "simple"])
def test_picture_without_objects_passes_through(name):
    image, _, _ = picture(3, 0)
    for seed in range(20):
        out, t = A.AUGMENTATIONS[name]()(image.astype(np.uint8), np.zeros((0, 5), np.float32),
                                         np.random.default_rng(seed))
        assert t.shape == (0, 5) and out.ndim == 3 and min(out.shape[:2]) >= 1
