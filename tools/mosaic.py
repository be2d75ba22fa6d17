"""Pictures side by side in one: a grid of thumbnails, for the docs.

    python tools/mosaic.py OUT.png PICTURES... [--columns 4] [--side 240]

Each picture is scaled to fit a square of ``--side`` pixels (aspect kept) and centred on
a white tile, in the order given; OUT must not exist yet.
"""
import argparse
from pathlib import Path

from PIL import Image


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("pictures", nargs="+", type=Path)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--side", type=int, default=240)
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists: give a new name")

    side, columns = args.side, args.columns
    rows = -(-len(args.pictures) // columns)
    sheet = Image.new("RGB", (columns * side, rows * side), "white")
    for i, path in enumerate(args.pictures):
        with Image.open(path) as picture:
            picture = picture.convert("RGB")
            picture.thumbnail((side - 4, side - 4))
            x = (i % columns) * side + (side - picture.width) // 2
            y = (i // columns) * side + (side - picture.height) // 2
            sheet.paste(picture, (x, y))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"{args.out}: {len(args.pictures)} pictures, {sheet.width}x{sheet.height}")


if __name__ == "__main__":
    main()
