"""Peak memory (max RSS) of `kdpm2 sample` against the number of samples, side by side.

Usage::

    .venv/bin/python benchmarks/memory.py                 # 1e3, 1e4, 1e5 digits, 2 steps
    .venv/bin/python benchmarks/memory.py --num-samples 1000 100000 --steps 20

Each run is a fresh process measured by a fresh parent (``RUSAGE_CHILDREN``), NumPy backend,
``--batch-size 1024``, PNG and ``.npy`` written. The steps do not change the memory; the
batch bounds the sampling's, the samples themselves take 256 bytes each (float32 8x8) and the
PNG shows at most the first 4096 digits.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def peak_mib(num_samples: int, steps: int, out: Path) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "kdpm2", "sample", "-q", "--num-samples", str(num_samples),
               "--steps", str(steps), "--batch-size", "1024", "--out", str(out / "x.png"),
               "--npy", str(out / "x.npy")]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, env=env,
        check=True,
    )  # fmt: skip
    return int(result.stdout.strip()) / 1024  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    print("| samples | peak RSS |")
    print("|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.num_samples:
            print(f"| {n} | {peak_mib(n, args.steps, Path(tmp)):.0f} MiB |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
