"""The ``ssdonnx`` command line: a thin click shell over the library.

torch and onnxruntime are imported inside the commands that use them, so that
``ssdonnx --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from pathlib import Path

import click

from .config import get_config
from .errors import (CalibrationError, CheckpointError, ConfigError, OnnxFileError,
                     OutputError, ProviderError, StandInUnavailable)

PROVIDER = click.Choice(["auto", "cpu", "cuda"])
INTERRUPTED = 130     # the shell's exit status after SIGINT


class InputError(click.ClickException):
    """Bad input (a file, a config, an array): message and exit code 2, no traceback."""
    exit_code = 2

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True)


def _friendly(fn):
    """Turn the library's input errors into InputError (exit 2, one line)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, CheckpointError, OnnxFileError, OutputError, ProviderError,
                CalibrationError, StandInUnavailable, FileExistsError, FileNotFoundError,
                ValueError, TypeError) as exc:
            raise InputError(str(exc)) from None
    return wrapper


class _Group(click.Group):
    """Ctrl-C anywhere in a command: one line and exit status 130, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(INTERRUPTED)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssdonnx")
def main():
    """SSD object detection end to end through ONNX: network, detector and loss."""


class _ParityFailed(Exception):
    """An exported file that did not pass its parity check (the table says why)."""


def _verify(path: Path, weights, provider: str, batch: int | None = None, seed: int = 1,
            threads: int | None = None, name: Path | None = None, data=None) -> bool:
    """Check ``path`` against its PyTorch reference and print the table; ``name`` is
    the file's name for the messages (the export checks a temporary file). An int8
    detector is compared on pictures: ``data``, or its calibration folder."""
    from .export import read_info
    from .parity import VERIFY_CASES, check_parity, format_table
    from .runtime import Session

    name = name or path
    info = read_info(path)
    sess = Session(path, provider, threads)
    if sess.note:
        click.echo(sess.note, err=True)
    if info.precision == "int8":
        return _verify_int8(info, sess, weights, data, name)
    cases = VERIFY_CASES if batch is None else ((batch, 4), (batch, 0))
    with _status(f"verifying {name} ({info.kind}, {info.config.name}) on {sess.provider}"):
        rows = check_parity(info, sess, weights, cases=cases, seed=seed)
    click.echo(format_table(rows))
    ok = all(r.passed for r in rows)
    click.echo(f"{'PASS' if ok else 'FAIL'}: PyTorch vs onnxruntime ({sess.provider}), "
               f"{info.kind} graph {name}")
    return ok


def _verify_int8(info, sess, weights, data, name) -> bool:
    from .parity import check_int8
    from .quantize import calibration_pictures, load_pictures

    folder = data or info.calibration["folder"]
    if data is None and not Path(folder).is_dir():
        raise InputError(f"{name} was calibrated on {folder}, which is gone; pass --data "
                         "with pictures to compare on")
    files = calibration_pictures(folder, info.calibration["pictures"] if data is None else None)
    images = load_pictures(files, info.config.input_size)
    with click.progressbar(length=len(images), label=f"comparing int8 {name} with float32",
                           file=sys.stderr, show_pos=True) as bar:
        agreement = check_int8(info, sess, weights, images, progress=bar.update)
    click.echo(agreement.summary())
    return agreement.passed


@main.command()
@click.argument("kind", type=click.Choice(["model", "detector", "loss", "all"]))
@click.option("--config", "config", default="ssd300-voc", show_default=True,
              help="Preset name or path of a JSON config.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint (seed state_dict format) for model and detector.")
@click.option("--output", type=click.Path(), default=None,
              help="The .onnx file for one kind; a folder for all "
                   "[default: models/<config>/<kind>.onnx].")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--no-verify", is_flag=True, help="Skip the checker and the parity check.")
@click.option("--int8", is_flag=True,
              help="detector only: quantize the network to int8 for onnxruntime on the CPU "
                   "(the detection head stays float32); needs --calibration.")
@click.option("--calibration", type=click.Path(), default=None,
              help="Pictures to calibrate the int8 ranges on: a folder, or a VOC-layout set.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=64,
              show_default=True, help="Use the first N pictures (sorted by path).")
@_friendly
def export(kind, config, weights, output, opset, force, no_verify, int8, calibration,
           calibration_images):
    """Export KIND (model, detector, loss or all) to ONNX, then check and verify it.

    Each file is written under a temporary name and checked there (onnx.checker, then
    parity with PyTorch on onnxruntime's CPU provider); only a file that passes replaces
    OUTPUT. On a failure or Ctrl-C, an existing OUTPUT stays as it was. An int8 detector
    is checked against the float32 one on its calibration pictures: detections matched
    by class and IoU (not bit parity).
    """
    if int8 and kind != "detector":
        raise InputError(f"--int8 is for `export detector`, not `export {kind}`")
    if int8 != (calibration is not None):
        raise InputError("--int8 and --calibration go together: int8 ranges are "
                         "calibrated on your pictures")
    cfg = get_config(config)
    kinds = ["model", "detector", "loss"] if kind == "all" else [kind]
    if output is None:
        from .config import PRESETS_DIR
        paths = [PRESETS_DIR / cfg.name / f"{k}.onnx" for k in kinds]
    elif kind == "all":
        if Path(output).exists() and not Path(output).is_dir():
            raise InputError(f"--output {output} is a file; for `export all` it is the "
                             "folder to write model.onnx, detector.onnx and loss.onnx in")
        paths = [Path(output) / f"{k}.onnx" for k in kinds]
    else:
        if Path(output).is_dir():
            raise InputError(f"--output {output} is a folder; for `export {kind}` it is "
                             f"the file to write (e.g. {Path(output) / f'{kind}.onnx'}); "
                             "a folder is for `export all`")
        paths = [Path(output)]
    from .export import check_destination, export_graph

    for p in paths:   # before any work: nothing to overwrite, every folder writable
        check_destination(p, force)
    pictures = 0
    if int8:
        from .quantize import calibration_pictures

        pictures = len(calibration_pictures(calibration, calibration_images))

    def check(tmp, k, path):
        import onnx

        with _status(f"onnx.checker (full check) on {path}"):
            onnx.checker.check_model(str(tmp), full_check=True)
        if not _verify(tmp, weights if k != "loss" else None, "cpu", name=path):
            raise _ParityFailed(path)

    failed = []
    for k, path in zip(kinds, paths):
        click.echo(f"exporting {k}{' (int8)' if int8 else ''} for {cfg.name} (opset {opset}) "
                   "...", err=True)
        t0 = time.perf_counter()
        bar = click.progressbar(length=pictures, label=f"calibrating on {pictures} pictures",
                                file=sys.stderr, show_pos=True) if int8 else None
        try:
            export_graph(k, cfg, path, weights=weights if k != "loss" else None,
                         opset=opset, force=force,
                         check=None if no_verify else functools.partial(check, k=k, path=path),
                         calibration=calibration, calibration_images=calibration_images,
                         progress=bar.update if bar else None)
        except _ParityFailed:
            failed.append(str(path))
            continue
        finally:
            if bar:
                bar.render_finish()
        click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in "
                   f"{time.perf_counter() - t0:.1f}s")
    if failed:
        raise click.ClickException(
            f"parity check failed for {', '.join(failed)}: not written (an existing file "
            "stays as it was); --no-verify writes it unchecked")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch size of the check inputs [default: 3 and 1].")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--data", type=click.Path(file_okay=False, exists=True), default=None,
              help="int8 detectors: pictures to compare on (a folder or a VOC-layout set; "
                   "its first 64) [default: the calibration pictures].")
@_friendly
def verify(file, weights, provider, batch, seed, data):
    """Rebuild FILE's PyTorch reference and compare it with onnxruntime.

    Float32 graphs: outputs within named tolerances on random inputs. int8 detectors:
    detections matched by class and IoU on pictures, with a lower bound on the share
    matched (ssdonnx.parity.INT8_MIN_AGREEMENT).
    """
    if not _verify(Path(file), weights, provider, batch, seed, data=data):
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

    def floats(key):
        """The array as float32: floating point only, as the Python API's contract."""
        array = data[key]
        if not np.issubdtype(array.dtype, np.floating):
            raise InputError(f"{npz_path}: {key}: expected floating-point values, got "
                             f"{array.dtype}")
        return np.asarray(array, dtype=np.float32)

    loc = torch.from_numpy(floats("loc"))
    conf = torch.from_numpy(floats("conf"))
    if "targets" in keys:
        targets = torch.from_numpy(floats("targets"))
    else:
        expected = [f"targets_{i}" for i in range(len(per_image))]
        if per_image != expected:
            raise InputError(f"{npz_path}: per-image targets must be {expected[:3]}..., "
                             f"got {per_image}")
        arrays = [torch.from_numpy(floats(k).reshape(-1, 5) if data[k].size == 0
                                   else floats(k)) for k in per_image]
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
    from .runtime import available_providers, provider_problem

    meta = read_info(file)
    proto = onnx.load(str(file), load_external_data=False)

    def dims(value):
        return "[" + ", ".join(d.dim_param or str(d.dim_value)
                               for d in value.type.tensor_type.shape.dim) + "]"

    cfg = meta.config
    weights = "none (a loss graph has no parameters)" if meta.kind == "loss" else meta.weights
    click.echo(f"file:       {file}\nkind:       {meta.kind}\n"
               f"config:     {cfg.name} (input {cfg.input_size}, {cfg.num_classes} classes, "
               f"P = {cfg.num_priors})\nopset:      {meta.opset}\n"
               f"ssdonnx:    {meta.version}\nweights:    {weights}")
    if meta.thresholds:
        click.echo("thresholds: " + ", ".join(f"{k}={v}" for k, v in meta.thresholds.items()))
    click.echo(f"precision:  {meta.precision}")
    if meta.precision == "int8":
        cal, src = meta.calibration, meta.float_source
        click.echo(f"calibration: {cal['pictures']} pictures from {cal['folder']} (file list "
                   f"sha256 {cal['files_sha256'][:16]}...)\n"
                   f"float32 source: network sha256 {src['network_sha256'][:16]}... from "
                   f"weights {src['weights']}; quantized {', '.join(src['quantized'])} (the "
                   "detection head is float32); for CPUExecutionProvider")
    for label, values in (("inputs", proto.graph.input), ("outputs", proto.graph.output)):
        click.echo(f"{label}:")
        for v in values:
            dtype = onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()
            click.echo(f"  {v.name:16s} {dtype:8s} {dims(v)}")
    click.echo("providers (of this onnxruntime, and whether each loads here):")
    for name in available_providers():
        problem = provider_problem(name)
        click.echo(f"  {name:26s} {'loads' if problem is None else 'cannot load: ' + problem}")


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
              show_default=True,
              help="Folder for the pictures (<name>.png each) and detections.json; "
                   "never an input's file, and left out of the input folders' search.")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--score", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Keep detections with at least this score.")
@click.option("--labels", default=None, help="voc, coco or a file of class names.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@_friendly
def detect(detector, images, out_dir, provider, score, labels, batch):
    """Find objects in IMAGES (files, or folders searched for every picture format
    Pillow reads) with an exported detector; draw them.

    Writes one picture per input and detections.json (pixel coordinates of the original
    pictures). Pictures that cannot be read are named and skipped, and the command then
    exits with status 2 after writing the rest.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .draw import draw_detections
    from .export import read_info
    from .pictures import collect, result_names
    from .runtime import Session
    from .transforms import preprocess, to_rgb

    info = read_info(detector, kind="detector")
    names = _class_names(labels, info.config)
    out = Path(out_dir)
    pictures = collect(images, skip=out)
    if not pictures:
        raise InputError(f"no pictures (of a format Pillow reads) in {', '.join(images)}")
    outputs = result_names(pictures)
    inputs = {f.resolve() for f, _ in pictures}
    clobbered = [str(out / n) for n in outputs if (out / n).resolve() in inputs]
    if clobbered:
        raise InputError(f"--out {out}: the results would overwrite input pictures "
                         f"({', '.join(clobbered[:3])}{', ...' if len(clobbered) > 3 else ''}"
                         "); choose another folder")
    sess = Session(detector, provider)
    if sess.note:
        click.echo(sess.note, err=True)
    out.mkdir(parents=True, exist_ok=True)
    results, failed, n_dets = [], [], 0
    t0 = time.perf_counter()
    work = list(zip(pictures, outputs))
    with click.progressbar(length=len(work), label="detecting", file=sys.stderr,
                           show_pos=True) as bar:
        for start in range(0, len(work), batch):
            chunk, loaded = work[start:start + batch], []
            for (f, _), name in chunk:
                try:
                    with Image.open(f) as im:
                        loaded.append((f, name, to_rgb(im)))
                except (OSError, UnidentifiedImageError, ValueError) as exc:
                    failed.append(f"{f}: {exc}")
            if loaded:
                x = np.stack([preprocess(im, info.config.input_size).numpy()
                              for _, _, im in loaded])
                res = sess.run(images=x)
                for (f, name, im), dets, num in zip(loaded, res["detections"],
                                                    res["num_detections"]):
                    W, H = im.size
                    found = [{"label": names[int(d[5]) - 1], "class_id": int(d[5]),
                              "score": round(float(d[4]), 4),
                              "box": [round(float(v), 1) for v in d[:4] * [W, H, W, H]]}
                             for d in dets[: int(num)] if d[4] >= score]
                    n_dets += len(found)
                    results.append({"image": str(f), "picture": str(name), "width": W,
                                    "height": H, "detections": found})
                    (out / name).parent.mkdir(parents=True, exist_ok=True)
                    draw_detections(im, found).save(out / name)
            bar.update(len(chunk))
    took = time.perf_counter() - t0
    (out / "detections.json").write_text(json.dumps(results, indent=2))
    for message in failed:
        click.echo(f"skipped {message}", err=True)
    click.echo(f"{_plural(len(results), 'image')}, {_plural(n_dets, 'detection')} "
               f"(score >= {score}), {took / max(len(work), 1):.3f} s per image on "
               f"{sess.provider}; pictures and detections.json in {out}")
    if failed:
        raise InputError(f"{len(failed)} of {_plural(len(work), 'picture')} could not be "
                         "read (named above); the others were written")


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
@click.option("--int8", is_flag=True,
              help="detector only: also the int8 detector on onnxruntime's CPU provider, "
                   "against float32 onnxruntime in the same run.")
@_friendly
def bench(what, config, batches, provider, repeat, as_json, profile, int8):
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
    if int8 and what != "detector":
        raise InputError("--int8: only for `bench detector`")
    fn = {"loss": benchmarks.bench_loss,
          "detector": functools.partial(benchmarks.bench_detector, int8=int8),
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


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--simulate-cuda", is_flag=True,
              help="Without a GPU: onnxruntime-gpu's CUDA kernel registry and partitioner, "
                   "on stand-in CUDA libraries built with gcc (no kernel runs).")
@_friendly
def placement(files, simulate_cuda):
    """Where CUDAExecutionProvider runs each node of ONNX FILES; exit 1 if a compute node
    would run on the CPU or has no CUDA kernel.

    On a GPU (the stronger check) the graph runs once with profiling and the profile
    says where each node ran; shape arithmetic (a few int64 values), which onnxruntime
    keeps on the CPU on purpose, is listed apart. --simulate-cuda answers the same
    question where there is no GPU.
    """
    from . import placement as where

    failed = []
    for path in files:
        if simulate_cuda:
            report = where.simulate_cuda(path)
            click.echo(where.format_simulated(report))
            ok = report.ok
        else:
            from .runtime import provider_problem

            problem = provider_problem("CUDAExecutionProvider")
            if problem:
                raise InputError(f"CUDAExecutionProvider cannot load here ({problem}); "
                                 "without a GPU, use --simulate-cuda")
            nodes = where.node_providers(path, "cuda")
            click.echo(where.format_placement(path, nodes))
            ok = not where.cpu_compute(nodes)
        if not ok:
            failed.append(path)
    if failed:
        raise click.ClickException(f"nodes off CUDA in {', '.join(failed)}")


@main.group()
def data():
    """Data sets in the VOC layout."""


@data.command("shapes")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--train", "n_train", type=click.IntRange(min=0), default=2000, show_default=True)
@click.option("--val", "n_val", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--object-size", type=(int, int), default=(18, 64), show_default=True,
              metavar="MIN MAX", help="Object sides in pixels, MIN <= side < MAX, on "
              "160 x 120 pictures (e.g. 8 64 for a set with small objects).")
@_friendly
def data_shapes(out, n_train, n_val, seed, object_size):
    """Write the synthetic shapes data set (circles, squares, triangles) to OUT."""
    from .shapes import write_shapes

    with click.progressbar(length=n_train + n_val, label="writing shapes",
                           file=sys.stderr, show_pos=True) as bar:
        root = write_shapes(out, n_train, n_val, seed, progress=bar.update,
                            size_range=object_size)
    click.echo(f"wrote {n_train} train and {n_val} val images (seed {seed}, objects "
               f"{object_size[0]} to {object_size[1] - 1} px) to {root}")


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
              help="last.pth of an earlier run: continue it (its seed and augmentation).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of initialisation, order and augmentation [default: 0, or the "
                   "resumed run's].")
@click.option("--augment", type=click.Choice(["ssd", "simple", "none"]), default=None,
              help="ssd: the SSD paper's (photometric, expand, IoU-constrained crop, "
                   "mirror); simple: jitter, flip, mild crop [default: ssd, or the "
                   "resumed run's].")
@click.option("--amp", is_flag=True,
              help="Mixed precision: float16 with gradient scaling on CUDA, bfloat16 on "
                   "the CPU.")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader worker processes per training process.")
@_friendly
def train(config, data_root, out, epochs, batch, lr, schedule, weights, resume, seed,
          augment, amp, workers):
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

    run(cfg, data_root, out, epochs, batch, lr, weights, resume, seed, workers=workers,
        schedule=schedule, augment=augment, amp=amp, log=lambda m: click.echo(m, err=True),
        progress=progress)
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
