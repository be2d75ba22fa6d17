import torch

from ssdonnx import boxes
from helpers import random_boxes
from ssdonnx.testing.reference import decode, encode, jaccard, point_form

# Hand-checked: unit squares overlapping by half, and a box inside another.
A = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4]])
B = torch.tensor([[0.25, 0.0, 0.75, 0.5], [0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])
A_B_IOU = torch.tensor([[1 / 3, 1.0, 0.0], [0.03 / 0.26, 0.04 / 0.25, 0.0]])


def test_iou_hand_checked():
    torch.testing.assert_close(boxes.box_iou(A, B), A_B_IOU)


def test_iou_against_double_loop():
    gen = torch.Generator().manual_seed(0)
    a, b = random_boxes(gen, 17), random_boxes(gen, 23)
    loop = torch.tensor([[float(jaccard(a[i:i + 1], b[j:j + 1])) for j in range(23)]
                         for i in range(17)])
    torch.testing.assert_close(boxes.box_iou(a, b), loop)
    torch.testing.assert_close(boxes.box_iou(a, b), jaccard(a, b))


def test_iou_batched_broadcasts():
    gen = torch.Generator().manual_seed(1)
    a = torch.stack([random_boxes(gen, 5) for _ in range(3)])      # [3, 5, 4]
    b = random_boxes(gen, 7)                                        # [7, 4]
    out = boxes.box_iou(a, b)
    assert out.shape == (3, 5, 7)
    for i in range(3):
        torch.testing.assert_close(out[i], jaccard(a[i], b))


def test_format_round_trip_and_seed_point_form():
    gen = torch.Generator().manual_seed(2)
    xyxy = random_boxes(gen, 50)
    c = boxes.xyxy_to_cxcywh(xyxy)
    torch.testing.assert_close(boxes.cxcywh_to_xyxy(c), xyxy)
    torch.testing.assert_close(boxes.cxcywh_to_xyxy(c), point_form(c))


def test_encode_decode_match_seed_and_invert():
    gen = torch.Generator().manual_seed(3)
    truths = random_boxes(gen, 40)
    priors = boxes.xyxy_to_cxcywh(random_boxes(gen, 40))
    var = (0.1, 0.2)
    enc = boxes.encode(truths, priors, var)
    torch.testing.assert_close(enc, encode(truths, priors, var))
    torch.testing.assert_close(boxes.decode(enc, priors, var), truths, atol=1e-5, rtol=0)
    torch.testing.assert_close(boxes.decode(enc, priors, var), decode(enc, priors, var),
                               atol=1e-6, rtol=0)


def test_encode_never_takes_log_of_zero():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    degenerate = torch.tensor([[0.3, 0.3, 0.3, 0.6]])   # zero width
    enc = boxes.encode(degenerate, priors, (0.1, 0.2))
    assert torch.isfinite(enc).all()
    expected_dw = torch.log(torch.tensor(boxes.ENCODE_MIN_SIZE / 0.2)) / 0.2
    torch.testing.assert_close(enc[0, 2], expected_dw)


def test_encode_is_exact_for_any_positive_side():
    # A box 5e-7 wide (below ENCODE_MIN_SIZE) is valid input: encoded exactly, as the seed.
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    thin = torch.tensor([[0.3, 0.3, 0.3 + 5e-7, 0.6]])
    torch.testing.assert_close(boxes.encode(thin, priors, (0.1, 0.2)),
                               encode(thin, priors, (0.1, 0.2)))
