"""Long fuzzing run: the property tests of tests/test_checks.py with thousands of examples.

    python tools/fuzz.py [EXAMPLES]      (default 2000; CI runs 60)
"""
import os
import subprocess
import sys

if __name__ == "__main__":
    examples = sys.argv[1] if len(sys.argv) > 1 else "2000"
    env = dict(os.environ, SSDONNX_FUZZ_EXAMPLES=examples)
    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "tests/test_checks.py",
                              "-p", "no:cacheprovider"], env=env))
