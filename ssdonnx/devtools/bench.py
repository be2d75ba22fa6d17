"""Benchmarks: eager PyTorch, onnxruntime and the seed's loop reference, side by side on
the same inputs in one run. Medians over repetitions after warm-up; ratios against the
baseline of each table (the loop reference, or eager PyTorch for the whole detector)."""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import onnx
import torch

from ..config import get_config
from ..deploy.export import export
from ..deploy.graphs import batch_dim, build_graph, example_inputs, graph_proto, to_onnx
from ..deploy.runtime import Session
from ..loss import MultiBoxLoss
from ..matching import pad_targets
from ..postprocess import DetectionHead
from ..priors import default_boxes
from ..testing import reference


@dataclass
class Timing:
    bench: str
    batch: int
    impl: str
    median_ms: float
    min_ms: float
    max_ms: float
    ratio: float = float("nan")   # baseline median / this median: > 1 is faster


def timings(bench: str, batch: int, impls: list, repeat: int, warmup: int = 1
            ) -> list[Timing]:
    """Time each (name, fn) of ``impls`` ``repeat`` times, taking turns: on a noisy
    machine a slow spell then hits every implementation alike, not one of them."""
    for _, fn in impls:
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name, _ in impls}
    for _ in range(repeat):
        for name, fn in impls:
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return [Timing(bench, batch, name, statistics.median(ms), min(ms), max(ms))
            for name, ms in times.items()]


def _ratios(rows: list[Timing], baseline: str) -> list[Timing]:
    """Set each row's ratio against the baseline row of the same bench and batch."""
    base = {(r.bench, r.batch): r.median_ms for r in rows if r.impl == baseline}
    for r in rows:
        if (r.bench, r.batch) in base:
            r.ratio = base[r.bench, r.batch] / r.median_ms
    return rows


def realistic_logits(gen: torch.Generator, B: int, P: int, C: int):
    """Offsets and logits shaped like a trained SSD's: nearly every default box is
    confidently background, about 1% lean towards one foreground class."""
    loc = torch.randn(B, P, 4, generator=gen) * 0.5
    conf = torch.randn(B, P, C, generator=gen)
    conf[..., 0] += 5.0
    objects = torch.rand(B, P, generator=gen) < 0.01
    cls = torch.randint(1, C, (B, P), generator=gen)
    boost = torch.zeros(B, P, C).scatter(2, cls[..., None], 8.0) * objects[..., None]
    return loc, conf + boost


def _loss_inputs(cfg, B, gen, max_objects=8):
    """Network outputs for B images and the seed's list of targets, 1..max_objects each."""
    counts = torch.randint(1, max_objects + 1, (B,), generator=gen).tolist()
    seed = int(torch.randint(0, 2**31, (1,), generator=gen))
    batch = example_inputs("loss", cfg, B, 1, seed=seed)
    targets = [example_inputs("loss", cfg, 1, n, seed=seed + 1 + i)["targets"][0]
               for i, n in enumerate(counts)]
    return batch["loc"], batch["conf"], targets


def _synced(fn):
    """Call fn, then wait for the GPU (if any), so that a timing covers its work."""
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out


def _loss_step(loss_fn, loc, conf, dbox, targets):
    """Forward and backward of ``loss_fn(loc, conf, dbox, targets)`` on fresh leaves."""
    loc, conf = loc.clone().requires_grad_(), conf.clone().requires_grad_()
    sum(loss_fn(loc, conf, dbox, targets)).backward()


def bench_loss(config="ssd300-voc", batches=(1, 8, 32), repeat=5, provider="auto",
               backward=True, progress=print) -> list[Timing]:
    cfg = get_config(config)
    dbox = default_boxes(cfg)
    criterion = MultiBoxLoss(num_classes=cfg.num_classes)

    def ours(loc, conf, dbox, targets):
        return criterion((loc, conf, dbox), targets)
    seed = reference.multibox_loss_reference
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "loss.onnx"
        onnx.save_model(graph_proto("loss", cfg), path)
        sess = Session(path, provider, spinning=False)
        for B in batches:
            gen = torch.Generator().manual_seed(B)
            loc, conf, targets = _loss_inputs(cfg, B, gen)
            padded = pad_targets(targets)
            progress(f"loss B={B}")
            for device in devices:
                # CPU tables keep their plain names; CUDA ones say so, with their own
                # loop-reference baseline.
                suffix = "" if device == "cpu" else f" {device}"
                args = (loc.to(device), conf.to(device), dbox.to(device),
                        [t.to(device) for t in targets])
                impls = [("loop reference", partial(seed, *args)),
                         ("ssdonnx eager", partial(ours, *args))]
                if sess.provider == device:   # CUDA tensors go through IOBinding
                    feeds = dict(loc=args[0], conf=args[1], targets=padded.to(device))
                    impls.append((f"onnxruntime {sess.provider}", partial(sess.run, **feeds)))
                rows += timings("loss forward" + suffix, B,
                                [(impl, partial(_synced, fn)) for impl, fn in impls], repeat)
                if backward:
                    rows += timings("loss fwd+bwd" + suffix, B, [
                        (impl, partial(_synced, partial(_loss_step, loss_fn, *args)))
                        for impl, loss_fn in [("loop reference", seed), ("ssdonnx eager", ours)]],
                        repeat)
    return _ratios(rows, "loop reference")


def profile_loss(config="ssd300-voc", batch=32, repeat=5, top=6) -> str:
    """Where a loss forward spends its time, for the loop reference and ssdonnx eager:
    torch.profiler's operators with the most self CPU time, per forward."""
    cfg = get_config(config)
    dbox = default_boxes(cfg)
    criterion = MultiBoxLoss(num_classes=cfg.num_classes)
    loc, conf, targets = _loss_inputs(cfg, batch, torch.Generator().manual_seed(batch))
    lines = [f"profile of one loss forward, B={batch}, mean of {repeat} (self CPU time)"]
    for impl, fn in [("loop reference", partial(reference.multibox_loss_reference,
                                                loc, conf, dbox, targets)),
                     ("ssdonnx eager", partial(criterion, (loc, conf, dbox), targets))]:
        fn()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(repeat):
                fn()
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops)
        lines.append(f"{impl}: {total / repeat / 1e3:.1f} ms")
        lines += [f"  {e.key:<22} {e.self_cpu_time_total / repeat / 1e3:6.1f} ms "
                  f"{100 * e.self_cpu_time_total / total:4.0f}%  {e.count // repeat:4d} calls"
                  for e in ops[:top]]
    return "\n".join(lines)


def bench_head(config="ssd300-voc", batches=(1, 8), repeat=5, provider="auto",
               progress=print) -> list[Timing]:
    cfg = get_config(config)
    dbox = default_boxes(cfg)
    head = DetectionHead(dbox)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gen = torch.Generator().manual_seed(0)
        loc, conf = realistic_logits(gen, 2, cfg.num_priors, cfg.num_classes)
        B = batch_dim()
        path = Path(tmp) / "head.onnx"
        onnx.save_model(to_onnx(head.eval(), {"loc": loc, "conf": conf},
                                ["detections", "num_detections"],
                                {"loc": {0: B}, "conf": {0: B}}), path)
        sess = Session(path, provider, spinning=False)
        for b in batches:
            loc, conf = realistic_logits(torch.Generator().manual_seed(b), b, cfg.num_priors,
                                         cfg.num_classes)
            progress(f"head B={b}")
            rows += timings("detection head", b, [
                ("loop reference", partial(reference.detect_reference, loc, conf, dbox)),
                ("ssdonnx eager", partial(head, loc, conf)),
                (f"onnxruntime {sess.provider}",
                 partial(sess.run, loc=loc.numpy(), conf=conf.numpy()))], repeat)
    return _ratios(rows, "loop reference")


@torch.no_grad()
def _eager(module, *inputs):
    """Run a module without autograd and wait for the GPU (if any)."""
    return _synced(partial(module, *inputs))


# Pictures the int8 detector of a benchmark is calibrated on (generated shapes: the
# timing does not depend on what the ranges were calibrated on).
BENCH_CALIBRATION = 16


def bench_detector(config="ssd300-voc", batches=(1, 8), repeat=5, provider="auto",
                   progress=print, int8=False) -> list[Timing]:
    """Whole detectors: eager PyTorch (baseline), onnxruntime; with ``int8`` also the
    int8 detector on onnxruntime's CPU provider and a table of int8 against float32
    onnxruntime on the CPU. ``config``: one name, or several joined by commas, which
    are then timed in the same turns and compared on onnxruntime (CPU, float32) against
    the first."""
    cfgs = [get_config(c) for c in str(config).split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for cfg in cfgs:
            path = Path(tmp) / f"{cfg.name}.onnx"
            onnx.save_model(graph_proto("detector", cfg), path)
            run = {"cfg": cfg, "eager": build_graph("detector", cfg),
                   "sess": Session(path, provider, spinning=False),
                   "cpu": Session(path, "cpu", spinning=False)}
            if int8:
                from ..training.shapes import write_shapes

                progress(f"{cfg.name}: int8 detector, calibrated on {BENCH_CALIBRATION} "
                         "generated pictures")
                pictures = write_shapes(Path(tmp) / "calibration", 0, BENCH_CALIBRATION,
                                        force=True)
                quantized = export("detector", Path(tmp) / f"{cfg.name}-int8.onnx", cfg,
                                   calibration=pictures, verify_file=False)
                run["int8"] = Session(quantized.path, "cpu", spinning=False)
            runs.append(run)
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for b in batches:
            progress(f"detectors B={b}")
            impls, labels = [], {}
            for run in runs:
                name, sess = run["cfg"].name, run["sess"]
                images = example_inputs("detector", run["cfg"], b, seed=b)["images"]
                candidates = [(f"pytorch eager {device}",
                               partial(_eager, run["eager"].to(device), images.to(device)))
                              for device in devices]
                candidates.append((f"onnxruntime {sess.provider}",
                                   partial(sess.run, images=images)))
                if sess.provider != "cpu":
                    candidates.append(("onnxruntime cpu", partial(run["cpu"].run, images=images)))
                if int8:
                    candidates.append(("onnxruntime cpu int8",
                                       partial(run["int8"].run, images=images)))
                for label, fn in candidates:
                    impls.append((f"{name} {label}", fn))
                    labels[f"{name} {label}"] = (f"detector {name}", label)
            measured = {r.impl: r for r in timings("detector", b, impls, repeat)}
            for impl, (group, label) in labels.items():
                rows.append(Timing(**{**asdict(measured[impl]), "bench": group, "impl": label}))
            for run in runs:
                name = run["cfg"].name
                cpu = measured[f"{name} onnxruntime cpu"]
                if int8:
                    rows += [Timing(**{**asdict(cpu), "bench": f"int8 vs float32 {name}",
                                       "impl": "onnxruntime cpu float32"}),
                             Timing(**{**asdict(measured[f"{name} onnxruntime cpu int8"]),
                                       "bench": f"int8 vs float32 {name}",
                                       "impl": "onnxruntime cpu int8"})]
                if len(runs) > 1:
                    rows.append(Timing(**{**asdict(cpu), "bench": "networks, onnxruntime cpu",
                                          "impl": name}))
    out = []
    for bench in dict.fromkeys(r.bench for r in rows):
        group = [r for r in rows if r.bench == bench]
        baseline = ("pytorch eager cpu" if bench.startswith("detector") else
                    "onnxruntime cpu float32" if bench.startswith("int8") else cfgs[0].name)
        out += _ratios(group, baseline)
    order = {c.name: i for i, c in enumerate(cfgs)}

    def rank(r: Timing):    # detectors, then networks, then int8; configs as given
        kind = 0 if r.bench.startswith("detector") else 1 if r.bench.startswith("networks") \
            else 2
        return kind, order.get(r.bench.rsplit(" ", 1)[-1], 0), r.batch
    return sorted(out, key=rank)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {torch.get_num_threads()} threads{gpu}; torch {torch.__version__}, "
            f"onnxruntime {__import__('onnxruntime').__version__}")


def format_rows(rows: list[Timing]) -> str:
    header = ("bench", "B", "implementation", "median ms", "min-max ms", "speed-up")
    body = [(r.bench, str(r.batch), r.impl, f"{r.median_ms:.1f}",
             f"{r.min_ms:.1f}-{r.max_ms:.1f}",
             "-" if r.ratio != r.ratio else f"{r.ratio:.1f}x") for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["| " + " | ".join(x.ljust(w) for x, w in zip(line, widths)) + " |"
             for line in [header, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def as_dicts(rows: list[Timing]) -> list[dict]:
    return [asdict(r) for r in rows]


@dataclass
class Report:
    rows: list[Timing]
    repeat: int
    profile: str | None = None

    def text(self) -> str:
        lines = [f"{machine()}; medians of {self.repeat} runs after warm-up; speed-up = "
                 "baseline median / median", format_rows(self.rows)]
        return "\n".join(lines + ([self.profile] if self.profile else []))

    def as_dict(self) -> dict:
        return {"machine": machine(), "rows": as_dicts(self.rows)} | \
            ({"profile": self.profile} if self.profile else {})


def run(what: str, config="ssd300-voc", batches=(1, 8), repeat=5, provider="auto",
        profile=False, int8=False, progress=print) -> Report:
    """``ssdonnx bench WHAT``: loss, detector or head."""
    fn = {"loss": bench_loss, "detector": partial(bench_detector, int8=int8),
          "head": bench_head}[what]
    rows = fn(config, batches, repeat, provider, progress=progress)
    return Report(rows, repeat, profile_loss(config, max(batches), repeat) if profile else None)
