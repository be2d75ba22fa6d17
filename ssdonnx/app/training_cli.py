"""``ssdonnx`` commands for configs, data, training and evaluation (registered by
``cli``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .clikit import PROVIDER, LazyBar, StepLines, finite, log, progress_bar

DATA_HELP = ("A VOC-layout folder (JPEGImages/ or images/, Annotations/ or annotations/ "
             "or --annotations DIR, ImageSets/Main/*.txt) or a COCO .json file.")
ANNOTATIONS = click.option(
    "--annotations", default=None, metavar="DIR",
    help="The folder of the XML files, inside the data set or anywhere [default: "
         "Annotations/ or annotations/, else annots/, labels/ or xml/ holding XML files].")
SKIP_BAD = click.option(
    "--skip-bad", is_flag=True,
    help="Leave out pictures that cannot be read or do not fit their annotation (named "
         "in the output) instead of stopping.")


def _int_list(ctx, param, value):
    try:
        return tuple(int(v) for v in value.split(",")) if value else ()
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected epochs like 80,100") from None


@click.command()
@click.argument("preset")
@click.option("--classes", default=None,
              help="Your classes: cat,dog or a file of one name per line.")
@click.option("--input-size", type=click.IntRange(32, 2048), default=None,
              help="Another input side; the default boxes follow (the SSD paper's scales).")
@click.option("--name", default=None, help="The config's name [default: PRESET].")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON here [default: print it].")
@click.option("--force", is_flag=True, help="Overwrite --out.")
def config(preset, classes, input_size, name, out, force):
    """Show a config's default boxes and write it as JSON, for your classes and input
    size. (train takes --classes and --input-size itself; this is for those who want
    the file.)"""
    from ..config import (
        describe_priors,
        get_config,
        read_class_names,
        with_classes,
        with_input_size,
    )
    from ..deploy import files

    cfg = get_config(preset)
    if classes is not None:
        cfg = with_classes(cfg, read_class_names(classes))
    if input_size is not None and input_size != cfg.input_size:
        cfg = with_input_size(cfg, input_size)
    if name is not None:
        cfg = get_config(type(cfg).from_dict({**cfg.to_dict(), "name": name}))
    log(describe_priors(cfg))
    text = json.dumps(cfg.to_dict(), indent=2) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    files.write_text(files.check_destination(out, force), text)
    click.echo(f"wrote {out} ({cfg.name}: {cfg.num_classes - 1} classes, input "
               f"{cfg.input_size}, {cfg.num_priors} default boxes)")


@click.group()
def data():
    """Data sets: generated shapes, and splits of your own."""


@data.command("shapes")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--train", "n_train", type=click.IntRange(min=0, max=1_000_000), default=2000,
              show_default=True)
@click.option("--val", "n_val", type=click.IntRange(min=0, max=1_000_000), default=200,
              show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--object-size", type=(int, int), default=(18, 64), show_default=True,
              metavar="MIN MAX", help="Object sides in pixels, MIN <= side < MAX, on "
              "160 x 120 pictures (e.g. 8 64 for a set with small objects).")
@click.option("--force", is_flag=True, help="Write into a folder that already holds a data "
              "set (files of the same names are replaced).")
def data_shapes(out, n_train, n_val, seed, object_size, force):
    """Write the synthetic shapes data set (circles, squares, triangles) to OUT."""
    from ..training.shapes import write_shapes

    with progress_bar(n_train + n_val, "writing shapes") as bar:
        root = write_shapes(out, n_train, n_val, seed, progress=bar.update,
                            size_range=object_size, force=force)
    click.echo(f"wrote {n_train} train and {n_val} val images (seed {seed}, objects "
               f"{object_size[0]} to {object_size[1] - 1} px) to {root}")


@data.command("split")
@click.argument("dataset", type=click.Path(exists=True))
@click.option("--val", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=None, callback=finite,
              help="Share of the pictures held out, drawn with --seed [default: 0.2].")
@click.option("--every", type=click.IntRange(min=2), default=None, metavar="N",
              help="Hold out every N-th picture instead, in the ids' natural order (their "
                   "numbers as numbers).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@ANNOTATIONS
@click.option("--force", is_flag=True, help="Replace existing train/val lists.")
def data_split(dataset, val, every, seed, annotations, force):
    """Split DATASET's annotated pictures into train and val lists, for any naming of
    the ids (ImageSets/Main/{train,val,trainval}.txt, beside a COCO file)."""
    from ..training.data import annotation_note, is_coco, write_split

    if val is not None and every is not None:
        raise click.UsageError("--val and --every: give one")
    if not is_coco(dataset) and (note := annotation_note(dataset, annotations)):
        log(note)
    split = write_split(dataset, 0.2 if val is None else val, seed, force, every,
                        annotations)
    how = f"every {every}th held out" if every else f"seed {seed}"
    click.echo(f"{len(split['train'])} train and {len(split['val'])} val pictures "
               f"({how}) listed in ImageSets/Main of {dataset}")


@click.command()
@click.option("--config", default=None,
              help="Preset name or JSON config [default: the resumed run's].")
@click.option("--data", "data_root", type=click.Path(exists=True), required=True,
              help=DATA_HELP)
@click.option("--classes", default=None, help="Your classes: cat,dog or a file of names "
              "[default: the config's, or the data set's where the config lacks them].")
@click.option("--input-size", type=click.IntRange(32, 2048), default=None,
              help="Another input side; the default boxes follow.")
@click.option("--image-set", default="train", show_default=True,
              help="Image set(s) to train on: a list name, names joined by commas "
                   "(train,val), or all.")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--force", is_flag=True, help="Start a new run in a folder that holds one "
              "(its checkpoints are replaced).")
@click.option("--epochs", type=click.IntRange(min=1, max=100_000), default=10,
              show_default=True)
@click.option("--batch", type=click.IntRange(min=1, max=4096), default=32, show_default=True,
              help="Images per step and process.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True, max=100), default=1e-3,
              show_default=True, callback=finite)
@click.option("--schedule", type=click.Choice(["constant", "step", "cosine"]),
              default="constant", show_default=True)
@click.option("--warmup", type=click.FloatRange(0, 1000), default=None, callback=finite,
              help="Epochs of linear warm-up [default: 1 for cosine, else 0].")
@click.option("--lr-steps", default="", callback=_int_list,
              help="For --schedule step: epochs at which the rate drops x0.1 (80,100).")
@click.option("--weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Start from a checkpoint: every tensor that fits is loaded (another "
                   "class count, or a base network alone such as vgg16_reducedfc.pth).")
@click.option("--resume", type=click.Path(dir_okay=False, exists=True), default=None,
              help="last.pth of an earlier run: continue it (its settings).")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of initialisation, order and augmentation [default: 0, or the "
                   "resumed run's].")
@click.option("--augment", type=click.Choice(["ssd", "simple", "none"]), default=None,
              help="ssd: the SSD paper's (photometric, expand, IoU-constrained crop, "
                   "mirror); simple: jitter, flip, mild crop [default: ssd, or the "
                   "resumed run's].")
@click.option("--val-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Validation mAP every N epochs (and at the end); best.pth keeps the "
                   "best. 0: none.")
@click.option("--val-set", default=None, help="Image set to validate on [default: val].")
@click.option("--keep-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also keep every N-th epoch's weights (the last is always kept).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for PyTorch [default: torch's]; see docs/training.md.")
@click.option("--amp", is_flag=True,
              help="Mixed precision: float16 with gradient scaling on CUDA, bfloat16 on "
                   "the CPU.")
@click.option("--workers", type=click.IntRange(min=0, max=256), default=0, show_default=True,
              help="DataLoader worker processes per training process.")
@ANNOTATIONS
@SKIP_BAD
@click.option("--log-every", type=click.FloatRange(min=0), default=30, show_default=True,
              callback=finite, metavar="SECONDS",
              help="Not on a terminal (a log file, CI): a progress line inside each epoch "
                   "this often.")
def train(config, data_root, classes, input_size, image_set, out, force, epochs, batch, lr,
          schedule, warmup, lr_steps, weights, resume, seed, augment, val_every, val_set,
          keep_every, threads, amp, workers, annotations, skip_bad, log_every):
    """Train an SSD with MultiBoxLoss (also under torchrun, with DDP)."""
    from ..training.train import train as run

    bars = {}
    lines = None if sys.stderr.isatty() else StepLines(log_every, log)

    def progress(n, total, epoch, loss_l, loss_c, rate):
        if lines is not None:
            lines(n, total, f"epoch {epoch}/{epochs}",
                  f"loss_l {loss_l:.3f} loss_c {loss_c:.3f} {rate:.0f} img/s")
            return
        if epoch not in bars:
            for b in bars.values():
                b.render_finish()
            bars[epoch] = click.progressbar(
                length=total, label=f"epoch {epoch}/{epochs}", file=sys.stderr,
                item_show_func=lambda _: bars[epoch].status)
            bars[epoch].status = ""
        current = bars[epoch]
        current.status = f"loss_l {loss_l:.3f} loss_c {loss_c:.3f} {rate:.0f} img/s"
        current.update(n)

    checking = LazyBar("checking")
    try:
        records = run(config, data_root, out, epochs, batch, lr, weights, resume, seed,
                      classes, input_size, workers, schedule, warmup, lr_steps, augment, amp,
                      force, image_set, val_set, val_every, keep_every, threads, annotations,
                      skip_bad, log=log, progress=progress, check_progress=checking)
    finally:
        checking.finish()
        for b in bars.values():
            b.render_finish()
    final = sorted(Path(out).glob(f"*-epoch{epochs}.pth"))
    skipped = records[-1]["skipped"] if records else 0
    click.echo(f"checkpoints in {out}: last.pth (to resume)"
               + (f", {final[0].name} (the weights)" if final else "")
               + (", best.pth (best validation mAP)" if val_every else "") + "; log.csv"
               + (f" ({skipped} bad pictures skipped, named there)" if skipped else ""))


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data_root", type=click.Path(exists=True), required=True,
              help=DATA_HELP)
@click.option("--image-set", default="val", show_default=True,
              help="A list name, names joined by commas, or all.")
@click.option("--config", default=None,
              help="Config of a checkpoint MODEL that does not carry its own.")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--batch", type=click.IntRange(min=1, max=256), default=16, show_default=True)
@click.option("--coco", is_flag=True,
              help="Also COCO AP@[.5:.95], AP50, AP75 and per-class AP (pycocotools).")
@click.option("--json", "as_json", is_flag=True)
@ANNOTATIONS
@SKIP_BAD
def evaluate(model, data_root, image_set, config, provider, batch, coco, as_json, annotations,
             skip_bad):
    """VOC mAP@0.5 (and with --coco COCO AP) of MODEL: an exported detector.onnx
    (onnxruntime) or a checkpoint (eager PyTorch)."""
    from ..deploy.predict import Detector
    from ..training.evaluate import evaluate as run
    from ..training.evaluate import evaluate_coco, evaluation_set

    detector = Detector(model, config, provider, score=0.0)
    checking = LazyBar("checking")
    try:
        dataset = evaluation_set(data_root, image_set, detector.config, annotations=annotations,
                                 skip_bad=skip_bad, progress=checking)
    finally:
        checking.finish()
    for note in dataset.notes:
        log(note)
    with progress_bar(len(dataset), f"evaluating ({detector.runtime})") as bar:
        if coco:
            voc, coco_ap = evaluate_coco(detector, dataset, batch, progress=bar.update)
        else:
            voc, coco_ap = run(detector, dataset, batch, progress=bar.update), None
    if as_json:
        click.echo(json.dumps(voc.as_dict() | ({"coco": coco_ap.as_dict()} if coco else {})
                              | ({"skipped": [i for i, _ in dataset.skipped]}
                                 if dataset.skipped else {})))
        return
    click.echo(voc.table(detector.runtime))
    if coco_ap is not None:
        click.echo(coco_ap.table())
