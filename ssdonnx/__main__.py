"""``python -m ssdonnx``: the command line (also under ``torchrun -m ssdonnx train``)."""

from .app.cli import main

main()
