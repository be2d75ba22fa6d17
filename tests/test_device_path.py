"""The CUDA path of the eager loss and detection head reads nothing back to the host and
copies nothing from it, proven without a GPU: everything runs on the ``meta`` device
(tensors with shapes and no data, where any read of a value fails) under a recorder of
every transfer between the host and that device, which catches a planted copy and a
planted read (the negative controls)."""

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

import ssdonnx
from helpers import dbox, random_predictions, random_targets
from ssdonnx.loss import kth_largest_kernel, multibox_loss
from ssdonnx.postprocess import DetectionHead, greedy_fixed_point, greedy_scan, nms_kernel

META = torch.device("meta")
# Reading a value on the host (a wait for the GPU on CUDA), and making a device tensor
# from host data (a copy on CUDA).
HOST_READS = {Tensor.item, Tensor.__bool__, Tensor.__int__, Tensor.__float__,
              Tensor.__index__, Tensor.tolist, Tensor.numpy, Tensor.cpu, torch.equal}
FROM_HOST_DATA = {torch.tensor, torch.as_tensor, torch.asarray, torch.from_numpy,
                  Tensor.new_tensor}
MOVES = {Tensor.to, Tensor.cuda, Tensor.copy_, Tensor.__setitem__, torch.where}


class DeviceTraffic(TorchFunctionMode):
    """Records every call that reads a value of a ``device`` tensor on the host or puts
    host data on ``device`` (0-dimensional host tensors aside: kernels take those as
    arguments, without a copy)."""

    def __init__(self, device=META):
        super().__init__()
        self.device = torch.device(device)
        self.events: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        on_device = any(t.device == self.device for t in tensors)
        if func in HOST_READS and on_device:
            self.events.append(f"host read: {name}")
        out = func(*args, **kwargs)
        results = [t for t in tree_leaves(out) if isinstance(t, Tensor)]
        lands = any(t.device == self.device for t in results) or on_device
        if func in FROM_HOST_DATA and any(t.device == self.device for t in results):
            self.events.append(f"host-to-device copy: {name}")
        elif func in MOVES and lands and any(t.device.type == "cpu" and t.dim() > 0
                                             for t in tensors):
            self.events.append(f"host-to-device copy: {name}")
        return out


def on_meta(*tensors):
    return [t.to(META) for t in tensors]


def loss_inputs(counts=(3, 0, 5)):
    gen = torch.Generator().manual_seed(4)
    loc, conf = random_predictions(gen, len(counts), 8732, 21)
    targets = ssdonnx.pad_targets(random_targets(gen, counts))
    return loc, conf, dbox(), targets


def test_the_recorder_catches_a_planted_copy_and_a_planted_read():
    def planted_copy(x):      # what boxes.encode_features did on every loss call
        return torch.where(torch.tensor([False, False, True, True], device=x.device), x, 0)

    def planted_read(x):      # what the eager NMS did to size its work
        return x[: int(x.sum())]

    def planted_move(x):
        return x + torch.ones(4).to(x.device)

    for fn, event in ((planted_copy, "host-to-device copy: tensor"),
                      (planted_move, "host-to-device copy: to")):
        with DeviceTraffic() as traffic:
            fn(torch.zeros(4, device=META))
        assert traffic.events == [event]
    with DeviceTraffic() as traffic, pytest.raises(RuntimeError, match="meta"):
        planted_read(torch.zeros(4, device=META))
    assert traffic.events == ["host read: __int__"]


def test_the_recorder_is_quiet_on_device_ops_and_host_scalars():
    with DeviceTraffic() as traffic:
        x = torch.zeros(3, 4, device=META)
        torch.where(x > 0, 0.1, x).clamp(min=1e-10) + torch.arange(4, device=META)
    assert traffic.events == []


def test_loss_forward_and_backward_on_the_device_path():
    loc, conf, boxes, targets = on_meta(*loss_inputs())
    loc.requires_grad_(), conf.requires_grad_()
    with DeviceTraffic() as traffic:
        loss_l, loss_c = ssdonnx.MultiBoxLoss(validate=False)((loc, conf, boxes), targets)
        (loss_l + loss_c).backward()
    assert traffic.events == []
    assert loss_l.device == META and conf.grad.shape == conf.shape


def test_match_and_pad_targets_on_the_device_path():
    gen = torch.Generator().manual_seed(2)
    targets = [t.to(META) for t in random_targets(gen, [2, 0, 4])]
    boxes = dbox().to(META)
    with DeviceTraffic() as traffic:
        padded = ssdonnx.pad_targets(targets, validate=False)
        loc_t, conf_t = ssdonnx.match(padded[..., :4], padded[..., 4], boxes, validate=False)
    assert traffic.events == [] and loc_t.shape == (3, 8732, 4)


def test_the_custom_operators_device_kernels_read_nothing_back():
    # On meta, the operators themselves run their shape functions; their eager kernels
    # are called directly, taking the branch every device but the CPU takes.
    values = torch.randn(3, 8732, device=META)
    k = torch.ones(3, 1, dtype=torch.long, device=META)
    boxes = torch.rand(40, 200, 4, device=META)
    scores = torch.rand(40, 200, device=META)
    with DeviceTraffic() as traffic:
        assert kth_largest_kernel(values, k).shape == (3, 1)
        assert nms_kernel(boxes, scores, 0.45, 0.01).shape == (40, 200)
    assert traffic.events == []


def test_detection_head_on_the_device_path():
    gen = torch.Generator().manual_seed(5)
    loc, conf = on_meta(*random_predictions(gen, 2, 8732, 21))
    head = DetectionHead(dbox()).to(META)
    with DeviceTraffic() as traffic:
        detections, num = head(loc, conf)
    assert traffic.events == [] and detections.shape == (2, 200, 6)


@pytest.mark.parametrize("seed", range(20))
def test_the_scan_and_the_fixed_point_keep_the_same_boxes(seed):
    gen = torch.Generator().manual_seed(seed)
    N, m = 6, int(torch.randint(1, 60, (1,), generator=gen))
    # Valid candidates are a prefix of each row; the device branch scans the invalid
    # tail too (it does not read the prefix's length), the CPU branch stops before it.
    valid = (torch.rand(N, m, generator=gen) < 0.9).cumprod(1).bool()
    suppresses = (torch.rand(N, m, m, generator=gen) < 0.2) & \
        torch.ones(m, m, dtype=torch.bool).triu(1)
    assert torch.equal(greedy_scan(valid, suppresses), greedy_fixed_point(valid, suppresses))


def test_loss_function_on_the_device_path_takes_no_check():
    # multibox_loss (what the exported graph is made of) reads no value either.
    loc, conf, boxes, targets = on_meta(*loss_inputs((1, 2)))
    with DeviceTraffic() as traffic:
        multibox_loss(loc, conf, boxes, targets)
    assert traffic.events == []
