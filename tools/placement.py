"""Where onnxruntime runs each node of exported graphs, from its own session profile.

    python tools/placement.py FILE.onnx [FILE.onnx ...] [--provider cuda|cpu]

Prints nodes per provider and op type, then any compute node left on the CPU; exits 1
if there is one (with --provider cpu every compute node is, by definition).
"""
import argparse
import sys

from ssdonnx.placement import cpu_compute, format_placement, node_providers

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--provider", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()
    failed = False
    for path in args.files:
        nodes = node_providers(path, args.provider)
        print(format_placement(path, nodes))
        failed |= bool(cpu_compute(nodes))
    sys.exit(1 if failed else 0)
