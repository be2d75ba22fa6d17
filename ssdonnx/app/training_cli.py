"""``ssdonnx`` commands for data, training and evaluation (registered by ``cli``)."""

from __future__ import annotations

import json
import sys

import click

from .clikit import PROVIDER, finite, log, progress_bar

@click.group()
def data():
    """Data sets in the VOC layout."""


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


@click.command()
@click.option("--config", required=True, help="Preset name or JSON config.")
@click.option("--data", "data_root", type=click.Path(file_okay=False, exists=True),
              required=True, help="VOC-layout folder (ImageSets/Main/train.txt).")
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
@click.option("--workers", type=click.IntRange(min=0, max=256), default=0, show_default=True,
              help="DataLoader worker processes per training process.")
def train(config, data_root, image_set, out, force, epochs, batch, lr, schedule, weights,
          resume, seed, augment, amp, workers):
    """Train an SSD with MultiBoxLoss (also under torchrun, with DDP)."""
    from ..config import get_config
    from ..training.train import train as run

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

    try:
        run(cfg, data_root, out, epochs, batch, lr, weights, resume, seed, workers=workers,
            schedule=schedule, augment=augment, amp=amp, force=force, image_set=image_set,
            log=log,
            progress=progress)
    finally:
        for bar in bars.values():
            bar.render_finish()
    click.echo(f"checkpoints in {out} (seed state_dict format: {cfg.name}-epoch{epochs}.pth)")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data_root", type=click.Path(file_okay=False, exists=True),
              required=True)
@click.option("--image-set", default="val", show_default=True)
@click.option("--config", default=None, help="Config of a checkpoint MODEL.")
@click.option("--provider", type=PROVIDER, default="auto", show_default=True)
@click.option("--batch", type=click.IntRange(min=1, max=256), default=16, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def evaluate(model, data_root, image_set, config, provider, batch, as_json):
    """VOC mAP@0.5 of MODEL: an exported detector.onnx (onnxruntime) or a checkpoint
    with --config (eager PyTorch)."""
    from ..deploy.predict import Detector
    from ..training.evaluate import evaluate as run
    from ..training.evaluate import evaluation_set

    detector = Detector(model, config, provider, score=0.0)
    dataset = evaluation_set(data_root, image_set, detector.config)
    with progress_bar(len(dataset), f"evaluating ({detector.runtime})") as bar:
        result = run(detector, dataset, batch, progress=bar.update)
    click.echo(json.dumps(result.as_dict()) if as_json else result.table(detector.runtime))

