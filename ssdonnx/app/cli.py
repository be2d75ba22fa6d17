"""The ``ssdonnx`` command line: a thin click shell over the library. Each command maps
its options onto one library call and prints what it did; the error contract is in
``clikit``. torch and onnxruntime are imported inside the commands that use them, so
``ssdonnx --help`` answers at once. This module holds the commands that export, check
and run graphs; ``training_cli`` those for data, training and evaluation.
"""

from __future__ import annotations

import json
import sys

import click

from . import training_cli
from .clikit import PROVIDER, Group, LazyBar, UsageError, finite, log, plural, progress_bar


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssdonnx")
def main():
    """SSD object detection end to end through ONNX: network, detector and loss."""


@main.command()
@click.argument("kind", type=click.Choice(["model", "detector", "loss", "all"]))
@click.option("--config", "config", default=None,
              help="Preset name or path of a JSON config [default: the config the "
                   "checkpoint carries, or ssd300-voc].")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint for model and detector: of ssdonnx train, or a plain "
                   "state_dict (the seed's, pytorch-ssd's).")
@click.option("--labels", default=None,
              help="Class names: a file of one per line (pytorch-ssd's labels.txt, "
                   "BACKGROUND first) or cat,dog; their number must fit the checkpoint.")
@click.option("--output", type=click.Path(), default=None,
              help="The .onnx file for one kind; a folder for all "
                   "[default: models/<config>/<kind>.onnx under the current folder].")
@click.option("--layout", type=click.Choice(["ssdonnx", "jetson"]), default="ssdonnx",
              show_default=True,
              help="detector only: jetson writes the graph jetson-inference loads (input_0 "
                   "-> scores after softmax, corner boxes; no NMS).")
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
def export(kind, config, weights, labels, output, layout, opset, force, no_verify, int8,
           calibration, calibration_images):
    """Export KIND (model, detector, loss or all) to ONNX, then check and verify it.

    Each file is written under a temporary name and checked there (onnx.checker, then
    parity with PyTorch on onnxruntime's CPU provider); only a file that passes replaces
    OUTPUT. On a failure or Ctrl-C, an existing OUTPUT stays as it was. An int8 detector
    is checked against the float32 one on its calibration pictures: detections matched
    by class and IoU (not bit parity).
    """
    from ..deploy.export import export as export_one
    from ..deploy.export import export_all

    if int8 and kind != "detector":
        raise UsageError(f"--int8 is for `export detector`, not `export {kind}`")
    if int8 != (calibration is not None):
        raise UsageError("--int8 and --calibration go together: int8 ranges are "
                         "calibrated on your pictures")
    if layout == "jetson":
        if kind != "detector" or int8:
            raise UsageError("--layout jetson is for `export detector` (float32)")
        kind = "jetson"
    if kind == "all":
        export_all(output, config, weights, labels=labels, opset=opset, force=force,
                   verify_file=not no_verify, log=log)
        return
    from pathlib import Path

    if output is not None and Path(output).is_dir():
        raise UsageError(f"--output {output} is a folder; for `export {kind}` it is the file "
                         f"to write (e.g. {Path(output) / f'{kind}.onnx'}); a folder is for "
                         "`export all`")
    bar = LazyBar("calibrating on")
    try:
        done = export_one(kind, output, config, weights, labels=labels, opset=opset,
                          force=force,
                          verify_file=not no_verify, calibration=calibration,
                          calibration_images=calibration_images, log=log, progress=bar)
    finally:
        bar.finish()
    click.echo(done.summary())


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--weights", type=click.Path(dir_okay=False), default=None)
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--runtime", type=click.Choice(["onnxruntime", "reference"]),
              default="onnxruntime", show_default=True,
              help="reference: the ONNX reference implementation (onnx.reference), "
                   "independent of onnxruntime; slow.")
@click.option("--batch", type=click.IntRange(min=1, max=64), default=None,
              help="Batch size of the check inputs [default: 3, 1 and 4].")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--data", type=click.Path(file_okay=False, exists=True), default=None,
              help="Pictures to compare on too (a folder or a VOC-layout set; its first 8); "
                   "for int8 detectors its first 64 instead of the calibration pictures.")
def verify(file, weights, provider, runtime, batch, seed, data):
    """Rebuild FILE's PyTorch reference and compare it with onnxruntime (or the ONNX
    reference implementation).

    Float32 graphs: outputs within named tolerances on random inputs and on inputs that
    reach the graphs' guards (flat pictures; zero logits; no objects). int8 detectors:
    detections matched by class and IoU on pictures, with a lower bound on the share
    matched (ssdonnx.deploy.parity.INT8_MIN_AGREEMENT).
    """
    from ..deploy.parity import verify as check

    if not check(file, weights, provider, batch, seed, data, runtime, log=log).passed:
        sys.exit(1)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs", type=click.Path(dir_okay=False), required=True,
              help="npz with loc [B,P,4], conf [B,P,C] and targets [B,G,5] "
                   "(or targets_0, targets_1, ... of shape [n_i, 5]).")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def loss(file, inputs, provider, as_json):
    """Run an exported loss graph in onnxruntime on the arrays in an npz file."""
    from ..deploy.arrays import load_loss_inputs
    from ..deploy.onnxfile import check_runnable, read_info
    from ..deploy.runtime import Session

    info = read_info(file, kind="loss")
    check_runnable(info)
    loc, conf, targets = load_loss_inputs(inputs, info.config)
    sess = Session(file, provider)
    out = sess.run(loc=loc, conf=conf, targets=targets)
    result = {"loss_l": float(out["loss_l"]), "loss_c": float(out["loss_c"]),
              "batch": int(loc.shape[0]), "provider": sess.provider}
    if as_json:
        click.echo(json.dumps(result))
        return
    if sess.note:
        log(sess.note)
    click.echo(f"loss_l = {result['loss_l']:.6f}\nloss_c = {result['loss_c']:.6f}\n"
               f"(batch {result['batch']}, {sess.provider})")


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
def info(file):
    """Show what an exported ssdonnx file holds (reads no weights, imports no torch)."""
    from ..deploy.onnxfile import describe, load_proto, read_info
    from ..deploy.runtime import available_providers, provider_problem

    proto = load_proto(file)
    click.echo(describe(read_info(file, proto=proto), proto))
    click.echo("providers (of this onnxruntime, and whether each loads here):")
    for name in available_providers():
        problem = provider_problem(name)
        click.echo(f"  {name:26s} {'loads' if problem is None else 'cannot load: ' + problem}")


@main.command()
@click.argument("detector", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="detections",
              show_default=True,
              help="Folder for the pictures (<name>.png each) and detections.json; "
                   "never an input's file, and left out of the input folders' search.")
@click.option("--force", is_flag=True,
              help="Replace files of the same names that --out already holds.")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--score", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              callback=finite, help="Keep detections with at least this score.")
@click.option("--labels", default=None, help="voc, coco or a file of class names.")
@click.option("--batch", type=click.IntRange(min=1, max=256), default=8, show_default=True)
def detect(detector, images, out_dir, force, provider, score, labels, batch):
    """Find objects in IMAGES (files, or folders searched for every picture format
    Pillow reads) with an exported detector; draw them.

    Writes one picture per input and detections.json (pixel coordinates of the original
    pictures, EXIF orientation applied). Pictures that cannot be read are named and
    skipped, and the command then exits with status 2 after writing the rest.
    """
    from ..deploy.predict import Detector
    from .annotate import annotate, plan

    found = Detector(detector, provider=provider, score=score, labels=labels)
    if found.note:
        log(found.note)
    work = plan(images, out_dir, force)
    with progress_bar(len(work), "detecting") as bar:
        report = annotate(found, work, batch=batch, progress=bar.update)
    for message in report.failed:
        log(f"skipped {message}")
    if report.empty:
        best = "no detection at all" if report.best_of_empty is None else \
            f"the best score on them was {report.best_of_empty:.4f}"
        log(f"{plural(report.empty, 'picture')} of {len(report.results)} had no detection "
            f"with score >= {score} ({best}; each picture's best_score is in "
            "detections.json; --score sets the threshold)")
    click.echo(f"{plural(len(report.results), 'image')}, "
               f"{plural(report.detections, 'detection')} (score >= {score}), "
               f"{report.seconds / max(report.pictures, 1):.3f} s per image on "
               f"{found.runtime}; pictures and detections.json in {report.out}")
    if report.failed:
        raise UsageError(f"{len(report.failed)} of {plural(report.pictures, 'picture')} "
                         "could not be read (named above); the others were written")


@main.command()
@click.argument("what", type=click.Choice(["loss", "detector", "head"]))
@click.option("--config", default="ssd300-voc", show_default=True,
              help="For detector: several joined by commas, compared in one run.")
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
def bench(what, config, batches, provider, repeat, as_json, profile, int8):
    """Time eager PyTorch, onnxruntime and the seed's loop reference on the same inputs."""
    from ..devtools import bench as benchmarks

    try:
        sizes = tuple(int(b) for b in batches.split(",")) if batches else \
            ((1, 8, 32) if what == "loss" else (1, 8))
    except ValueError:
        raise UsageError(f"--batch {batches!r}: expected sizes like 1,8,32") from None
    if not all(1 <= b <= 4096 for b in sizes):
        raise UsageError("--batch: sizes must be 1 to 4096")
    if profile and what != "loss":
        raise UsageError("--profile: only for `bench loss`")
    if int8 and what != "detector":
        raise UsageError("--int8: only for `bench detector`")
    report = benchmarks.run(what, config, sizes, repeat, provider, profile=profile,
                            int8=int8, progress=lambda m: log(f"timing {m} ..."))
    click.echo(json.dumps(report.as_dict(), indent=1) if as_json else report.text())


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--simulate-cuda", is_flag=True,
              help="Without a GPU: onnxruntime-gpu's CUDA kernel registry and partitioner, "
                   "on stand-in CUDA libraries built with gcc (no kernel runs).")
def placement(files, simulate_cuda):
    """Where CUDAExecutionProvider runs each node of ONNX FILES; exit 1 if a compute node
    would run on the CPU or has no CUDA kernel.

    On a GPU (the stronger check) the graph runs once with profiling and the profile
    says where each node ran; shape arithmetic (a few int64 values), which onnxruntime
    keeps on the CPU on purpose, is listed apart. --simulate-cuda answers the same
    question where there is no GPU.
    """
    from ..devtools import placement as where

    reports = [where.report(path, simulate_cuda) for path in files]
    for text, _ in reports:
        click.echo(text)
    failed = [path for path, (_, ok) in zip(files, reports) if not ok]
    if failed:
        raise click.ClickException(f"nodes off CUDA in {', '.join(failed)}")




for command in (training_cli.config, training_cli.data, training_cli.train,
                training_cli.evaluate):
    main.add_command(command)
