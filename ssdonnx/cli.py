"""The ``ssdonnx`` command line: a thin click shell over the library."""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import click

from .config import ConfigError, get_config

PROVIDER = click.Choice(["auto", "cpu", "cuda"])


class InputError(click.ClickException):
    """Bad input (a file, a config, an array): message and exit code 2, no traceback."""
    exit_code = 2

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True)


def _friendly(fn):
    """Turn the library's input errors into InputError (exit 2, one line)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .export import OnnxFileError
        from .model import CheckpointError
        from .runtime import ProviderError
        try:
            return fn(*args, **kwargs)
        except (ConfigError, CheckpointError, OnnxFileError, ProviderError,
                FileExistsError, FileNotFoundError, ValueError, TypeError) as exc:
            raise InputError(str(exc)) from None
    return wrapper


@contextlib.contextmanager
def _status(message: str):
    """Print 'message ...' now and 'done in Xs' (or 'failed') when the block ends."""
    t0, ok = time.perf_counter(), False
    click.echo(f"{message} ...", err=True, nl=False)
    try:
        yield
        ok = True
    finally:
        click.echo(f" {'done' if ok else 'failed'} in {time.perf_counter() - t0:.1f}s",
                   err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssdonnx")
def main():
    """SSD object detection end to end through ONNX: network, detector and loss."""


def _verify(path: Path, weights, provider: str, batch: int | None = None, seed: int = 1,
            threads: int | None = None) -> bool:
    from .export import read_info
    from .parity import VERIFY_CASES, check_parity, format_table
    from .runtime import Session

    info = read_info(path)
    sess = Session(path, provider, threads)
    if sess.note:
        click.echo(sess.note, err=True)
    cases = VERIFY_CASES if batch is None else ((batch, 4), (batch, 0))
    with _status(f"verifying {path} ({info.kind}, {info.config.name}) on {sess.provider}"):
        rows = check_parity(info, sess, weights, cases=cases, seed=seed)
    click.echo(format_table(rows))
    ok = all(r.passed for r in rows)
    click.echo(f"{'PASS' if ok else 'FAIL'}: PyTorch vs onnxruntime ({sess.provider}), "
               f"{info.kind} graph {path}")
    return ok


@main.command()
@click.argument("kind", type=click.Choice(["model", "detector", "loss", "all"]))
@click.option("--config", "config", default="ssd300-voc", show_default=True,
              help="Preset name or path of a JSON config.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint (seed state_dict format) for model and detector.")
@click.option("--output", type=click.Path(), default=None,
              help="File for one kind, folder for all [default: models/<config>/].")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--no-verify", is_flag=True, help="Skip the checker and the parity check.")
@_friendly
def export(kind, config, weights, output, opset, force, no_verify):
    """Export KIND (model, detector, loss or all) to ONNX, then check and verify it."""
    import onnx

    from .export import export_graph

    cfg = get_config(config)
    kinds = ["model", "detector", "loss"] if kind == "all" else [kind]
    if output is None:
        from .config import PRESETS_DIR
        folder = PRESETS_DIR / cfg.name
        paths = [folder / f"{k}.onnx" for k in kinds]
    elif kind == "all":
        paths = [Path(output) / f"{k}.onnx" for k in kinds]
    else:
        paths = [Path(output)]
    for p in paths:
        if p.exists() and not force:
            raise InputError(f"{p} exists; pass --force to overwrite it")
    failed = []
    for k, path in zip(kinds, paths):
        with _status(f"exporting {k} for {cfg.name} (opset {opset})"):
            export_graph(k, cfg, path, weights=weights if k != "loss" else None,
                         opset=opset, force=force)
        click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        if no_verify:
            continue
        with _status(f"onnx.checker (full check) on {path}"):
            onnx.checker.check_model(str(path), full_check=True)
        if not _verify(path, weights if k != "loss" else None, "cpu"):
            failed.append(str(path))
    if failed:
        raise click.ClickException(f"parity check failed for {', '.join(failed)}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch size of the check inputs [default: 3 and 1].")
@click.option("--seed", type=int, default=1, show_default=True)
@_friendly
def verify(file, weights, provider, batch, seed):
    """Rebuild FILE's PyTorch reference and compare it with onnxruntime."""
    if not _verify(Path(file), weights, provider, batch, seed):
        sys.exit(1)


def _load_loss_inputs(npz_path: Path, cfg):
    """loc, conf, targets from an npz: ``targets`` [B, G, 5] or ``targets_0``, ... per image."""
    import numpy as np
    import torch

    from . import checks
    from .matching import pad_targets

    try:
        data = np.load(npz_path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{npz_path} is not a readable .npz file ({type(exc).__name__})") \
            from None
    keys = set(data.files)
    missing = sorted({"loc", "conf"} - keys)
    per_image = sorted((k for k in keys if k.startswith("targets_")),
                       key=lambda k: int(k.split("_")[1]) if k.split("_")[1].isdigit() else -1)
    if "targets" not in keys and not per_image:
        missing.append("targets (or targets_0, targets_1, ...)")
    if missing:
        raise InputError(f"{npz_path}: missing arrays {missing}; found {sorted(keys)}")
    loc = torch.from_numpy(np.asarray(data["loc"], dtype=np.float32))
    conf = torch.from_numpy(np.asarray(data["conf"], dtype=np.float32))
    if "targets" in keys:
        targets = torch.from_numpy(np.asarray(data["targets"], dtype=np.float32))
    else:
        expected = [f"targets_{i}" for i in range(len(per_image))]
        if per_image != expected:
            raise InputError(f"{npz_path}: per-image targets must be {expected[:3]}..., "
                             f"got {per_image}")
        arrays = [torch.from_numpy(np.asarray(data[k], dtype=np.float32).reshape(-1, 5)
                                   if data[k].size == 0 else
                                   np.asarray(data[k], dtype=np.float32)) for k in per_image]
        targets = pad_targets(arrays)
    dbox_like = torch.zeros(cfg.num_priors, 4)
    checks.check_predictions(loc, conf, dbox_like)
    if conf.shape[2] != cfg.num_classes:
        raise InputError(f"{npz_path}: conf has {conf.shape[2]} classes, the graph "
                         f"({cfg.name}) takes {cfg.num_classes}")
    checks.check_targets(targets, cfg.num_classes)
    if targets.shape[0] != loc.shape[0]:
        raise InputError(f"{npz_path}: targets hold {targets.shape[0]} images, loc "
                         f"{loc.shape[0]}")
    return loc, conf, targets


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs", type=click.Path(dir_okay=False), required=True,
              help="npz with loc [B,P,4], conf [B,P,C] and targets [B,G,5] "
                   "(or targets_0, targets_1, ... of shape [n_i, 5]).")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def loss(file, inputs, provider, as_json):
    """Run an exported loss graph in onnxruntime on the arrays in an npz file."""
    from .export import read_info
    from .runtime import Session

    info = read_info(file, kind="loss")
    loc, conf, targets = _load_loss_inputs(Path(inputs), info.config)
    sess = Session(file, provider)
    out = sess.run(loc=loc, conf=conf, targets=targets)
    result = {"loss_l": float(out["loss_l"]), "loss_c": float(out["loss_c"]),
              "batch": int(loc.shape[0]), "provider": sess.provider}
    if as_json:
        click.echo(json.dumps(result))
    else:
        if sess.note:
            click.echo(sess.note, err=True)
        click.echo(f"loss_l = {result['loss_l']:.6f}\nloss_c = {result['loss_c']:.6f}\n"
                   f"(batch {result['batch']}, {sess.provider})")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_friendly
def info(file):
    """Show what an exported ssdonnx file holds."""
    import onnx

    from .export import read_info
    from .runtime import available_providers

    meta = read_info(file)
    proto = onnx.load(str(file), load_external_data=False)

    def dims(value):
        return "[" + ", ".join(d.dim_param or str(d.dim_value)
                               for d in value.type.tensor_type.shape.dim) + "]"

    cfg = meta.config
    click.echo(f"file:       {file}\nkind:       {meta.kind}\n"
               f"config:     {cfg.name} (input {cfg.input_size}, {cfg.num_classes} classes, "
               f"P = {cfg.num_priors})\nopset:      {meta.opset}\n"
               f"ssdonnx:    {meta.version}\nweights:    {meta.weights}")
    if meta.thresholds:
        click.echo("thresholds: " + ", ".join(f"{k}={v}" for k, v in meta.thresholds.items()))
    for label, values in (("inputs", proto.graph.input), ("outputs", proto.graph.output)):
        click.echo(f"{label}:")
        for v in values:
            dtype = onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()
            click.echo(f"  {v.name:16s} {dtype:8s} {dims(v)}")
    click.echo("providers:  " + ", ".join(available_providers()))


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _collect_images(paths) -> list[Path]:
    images = []
    for p in map(Path, paths):
        if p.is_dir():
            images += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            images.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    return images


def _class_names(spec: str | None, cfg) -> list[str]:
    """Names for classes 1..C-1: a preset's (voc, coco), a text file, or the config's."""
    if spec in ("voc", "coco"):
        names = list(get_config(f"ssd300-{spec}").class_names)
    elif spec is not None:
        path = Path(spec)
        if not path.is_file():
            raise InputError(f"--labels {spec!r}: expected voc, coco or a text file")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        names = list(cfg.class_names) or [f"class {i}" for i in range(1, cfg.num_classes)]
    if len(names) != cfg.num_classes - 1:
        raise InputError(f"--labels: {len(names)} names for the model's "
                         f"{cfg.num_classes - 1} foreground classes")
    return names


@main.command()
@click.argument("detector", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="detections",
              show_default=True, help="Folder for the pictures and detections.json.")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--score", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Keep detections with at least this score.")
@click.option("--labels", default=None, help="voc, coco or a file of class names.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@_friendly
def detect(detector, images, out_dir, provider, score, labels, batch):
    """Find objects in IMAGES (files or folders) with an exported detector; draw them."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .draw import draw_detections
    from .export import read_info
    from .runtime import Session
    from .transforms import preprocess

    info = read_info(detector, kind="detector")
    names = _class_names(labels, info.config)
    files = _collect_images(images)
    if not files:
        raise InputError(f"no .jpg, .jpeg or .png images in {', '.join(images)}")
    sess = Session(detector, provider)
    if sess.note:
        click.echo(sess.note, err=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, failed, n_dets = [], [], 0
    t0 = time.perf_counter()
    with click.progressbar(length=len(files), label="detecting", file=sys.stderr,
                           show_pos=True) as bar:
        for start in range(0, len(files), batch):
            chunk, loaded = files[start:start + batch], []
            for f in chunk:
                try:
                    with Image.open(f) as im:
                        loaded.append((f, im.convert("RGB")))
                except (OSError, UnidentifiedImageError, ValueError) as exc:
                    failed.append(f"{f}: {exc}")
            if loaded:
                x = np.stack([preprocess(im, info.config.input_size).numpy()
                              for _, im in loaded])
                res = sess.run(images=x)
                for (f, im), dets, num in zip(loaded, res["detections"],
                                              res["num_detections"]):
                    W, H = im.size
                    found = [{"label": names[int(d[5]) - 1], "class_id": int(d[5]),
                              "score": round(float(d[4]), 4),
                              "box": [round(float(v), 1) for v in d[:4] * [W, H, W, H]]}
                             for d in dets[: int(num)] if d[4] >= score]
                    n_dets += len(found)
                    results.append({"image": str(f), "width": W, "height": H,
                                    "detections": found})
                    draw_detections(im, found).save(out / f"{f.stem}.png")
            bar.update(len(chunk))
    took = time.perf_counter() - t0
    (out / "detections.json").write_text(json.dumps(results, indent=2))
    for message in failed:
        click.echo(f"skipped {message}", err=True)
    click.echo(f"{len(results)} images, {n_dets} detections (score >= {score}), "
               f"{took / max(len(files), 1):.3f} s per image on {sess.provider}; "
               f"pictures and detections.json in {out}")
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(files)} images could not be read")


@main.command()
@click.argument("what", type=click.Choice(["loss", "detector", "head"]))
@click.option("--config", default="ssd300-voc", show_default=True)
@click.option("--batch", "batches", default=None,
              help="Comma-separated batch sizes [default: 1,8,32 for loss; 1,8 otherwise].")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--profile", is_flag=True,
              help="loss only: then profile one forward at the largest batch (operators "
                   "with the most CPU time, for the loop reference and ssdonnx).")
@_friendly
def bench(what, config, batches, provider, repeat, as_json, profile):
    """Time eager PyTorch, onnxruntime and the seed's loop reference on the same inputs."""
    from . import bench as benchmarks

    if batches is None:
        sizes = (1, 8, 32) if what == "loss" else (1, 8)
    else:
        try:
            sizes = tuple(int(b) for b in batches.split(","))
        except ValueError:
            raise InputError(f"--batch {batches!r}: expected sizes like 1,8,32") from None
        if any(b < 1 for b in sizes):
            raise InputError("--batch: sizes must be >= 1")
    if profile and what != "loss":
        raise InputError("--profile: only for `bench loss`")
    fn = {"loss": benchmarks.bench_loss, "detector": benchmarks.bench_detector,
          "head": benchmarks.bench_head}[what]
    rows = fn(config, sizes, repeat, provider,
              progress=lambda m: click.echo(f"timing {m} ...", err=True))
    profiled = benchmarks.profile_loss(config, max(sizes), repeat) if profile else None
    if as_json:
        report = {"machine": benchmarks.machine(), "rows": benchmarks.as_dicts(rows)}
        click.echo(json.dumps(report | ({"profile": profiled} if profile else {}), indent=1))
    else:
        click.echo(f"{benchmarks.machine()}; medians of {repeat} runs after warm-up; "
                   "speed-up = baseline median / median")
        click.echo(benchmarks.format_rows(rows))
        if profile:
            click.echo(profiled)


@main.group()
def data():
    """Data sets in the VOC layout."""


@data.command("shapes")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--train", "n_train", type=click.IntRange(min=0), default=2000, show_default=True)
@click.option("--val", "n_val", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_friendly
def data_shapes(out, n_train, n_val, seed):
    """Write the synthetic shapes data set (circles, squares, triangles) to OUT."""
    from .shapes import write_shapes

    with click.progressbar(length=n_train + n_val, label="writing shapes",
                           file=sys.stderr, show_pos=True) as bar:
        root = write_shapes(out, n_train, n_val, seed, progress=bar.update)
    click.echo(f"wrote {n_train} train and {n_val} val images (seed {seed}) to {root}")


@main.command()
@click.option("--config", required=True, help="Preset name or JSON config.")
@click.option("--data", "data_root", type=click.Path(file_okay=False, exists=True),
              required=True, help="VOC-layout folder (ImageSets/Main/train.txt).")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per step and process.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True)
@click.option("--schedule", type=click.Choice(["constant", "cosine"]), default="constant",
              show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Initial weights (full model or VGG base).")
@click.option("--resume", type=click.Path(dir_okay=False, exists=True), default=None,
              help="last.pth of an earlier run.")
@click.option("--seed", type=int, default=0, show_default=True)
@_friendly
def train(config, data_root, out, epochs, batch, lr, schedule, weights, resume, seed):
    """Train an SSD with MultiBoxLoss (also under torchrun, with DDP)."""
    from .train import train as run

    cfg = get_config(config)
    bars = {}

    def progress(n, total, epoch, loss_l, loss_c, rate):
        if epoch not in bars:
            for bar in bars.values():
                bar.render_finish()
            bars[epoch] = click.progressbar(
                length=total, label=f"epoch {epoch}/{epochs}", file=sys.stderr,
                item_show_func=lambda _: bars[epoch].status)
            bars[epoch].status = ""
        bar = bars[epoch]
        bar.status = f"loss_l {loss_l:.3f} loss_c {loss_c:.3f} {rate:.0f} img/s"
        bar.update(n)

    run(cfg, data_root, out, epochs, batch, lr, weights, resume, seed,
        schedule=schedule, log=lambda m: click.echo(m, err=True), progress=progress)
    for bar in bars.values():
        bar.render_finish()
    click.echo(f"checkpoints in {out} (seed state_dict format: {cfg.name}-epoch{epochs}.pth)")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data_root", type=click.Path(file_okay=False, exists=True),
              required=True)
@click.option("--image-set", default="val", show_default=True)
@click.option("--config", default=None, help="Config of a checkpoint MODEL.")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_friendly
def evaluate(model, data_root, image_set, config, provider, batch, as_json):
    """VOC mAP@0.5 of MODEL: an exported detector.onnx (onnxruntime) or a checkpoint
    with --config (eager PyTorch)."""
    import torch

    from .data import VOCDataset
    from .evaluate import run_detector, voc_map

    if model.endswith(".onnx"):
        from .export import read_info
        from .runtime import Session

        cfg = read_info(model, kind="detector").config
        sess = Session(model, provider)

        def predict(images):
            out = sess.run(images=images)
            return out["detections"], out["num_detections"]
        how = f"onnxruntime {sess.provider}"
    else:
        if config is None:
            raise InputError("a checkpoint MODEL needs --config")
        from .graphs import build_graph

        cfg = get_config(config)
        detector = build_graph("detector", cfg, model)

        def predict(images):
            with torch.no_grad():
                return detector(images)
        how = "PyTorch eager"
    dataset = VOCDataset(data_root, image_set, cfg.class_names, size=cfg.input_size,
                         keep_difficult=True)
    with click.progressbar(length=len(dataset), label=f"evaluating ({how})",
                           file=sys.stderr, show_pos=True) as bar:
        detections, truths = run_detector(predict, dataset, batch, progress=bar.update)
    result = voc_map(detections, truths, cfg.class_names)
    if as_json:
        click.echo(json.dumps({"map07": result.map07, "map": result.map,
                               "per_class": result.per_class, "images": len(dataset)}))
        return
    click.echo(f"{'class':16s} {'AP (VOC07 11-pt)':>17s} {'AP (area)':>10s} {'objects':>8s}")
    for name, v in result.per_class.items():
        click.echo(f"{name:16s} {v['ap07']:17.4f} {v['ap']:10.4f} {v['positives']:8d}")
    click.echo(f"{'mAP':16s} {result.map07:17.4f} {result.map:10.4f}   "
               f"({len(dataset)} images, {how})")


if __name__ == "__main__":
    main()
