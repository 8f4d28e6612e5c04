"""Samples per second of `kdpm2 sample` on 1, 2, ... processes (torchrun), side by side.

Usage::

    .venv/bin/python benchmarks/scale.py     # 8192 digits, 20 steps, 1 and 2 processes
    .venv/bin/python benchmarks/scale.py --processes 1 2 4 --repeats 3 --num-samples 16384

Every process runs one thread (OMP_NUM_THREADS=1, as torchrun sets it), so P processes use P
cores; the single process is also timed with all cores' threads for reference. Runs alternate
(1, 2, 1, 2, ...) so that a noisy machine slows them alike; the table shows medians. Two figures
per run: the wall time of the whole command (start-up, sampling, gather, PNG and NPY written
by rank 0), which is what a user waits for, and the sampling phase that the summary line
reports (on rank 0: from the end of set-up until every process's samples are gathered).
Scaling efficiency = (samples/s on P processes) / (P x samples/s on 1 process, 1 thread).
The runs' .npy files are compared: every run must give the same bits. Writes JSON to
benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(processes: int, threads: int, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    job = ["sample", "--num-samples", str(args.num_samples), "--steps", str(args.steps)]
    job += ["--backend", args.backend, "--out", str(out / "x.png"), "--npy", str(out / "x.npy")]
    if processes == 1:
        command = [sys.executable, "-m", "kdpm2", *job]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", str(processes), "--module", "kdpm2", *job]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{command} failed:\n{result.stderr[-2000:]}")
    sampling = float(re.findall(r", ([0-9.]+) s\)$", result.stdout.strip())[-1])
    return wall, sampling


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-samples", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backend", choices=("numpy", "torch"), default="numpy")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    configs = [(p, 1) for p in args.processes]
    if cores > 1:
        configs.insert(1, (1, cores))  # one process, every core's threads
    times: dict[tuple[int, int], list[tuple[float, float]]] = {c: [] for c in configs}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for p, threads in configs:
                out = Path(tmp) / f"p{p}t{threads}"
                out.mkdir(exist_ok=True)
                times[(p, threads)].append(run(p, threads, args, out))
                samples = np.load(out / "x.npy")
                if reference is None:
                    reference = samples
                elif not np.array_equal(reference, samples):
                    raise SystemExit(f"{p} processes x {threads} threads gave other samples")
    n = args.num_samples
    print(f"kdpm2 sample: {n} digits, {args.steps} steps, {args.backend}; {cores} cores "
          f"({platform.processor() or platform.machine()}), Python {platform.python_version()}, "
          f"medians of {args.repeats} alternating runs; every run gave the same bits")  # fmt: skip
    print()
    print("| processes x threads | wall time | samples/s (wall) | sampling | samples/s (sampling) "
          "| efficiency (wall / sampling) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    base = times.get((1, 1))
    rows = []
    for (p, threads), runs in times.items():
        wall = statistics.median(r[0] for r in runs)
        sampling = statistics.median(r[1] for r in runs)
        eff = ""
        if base is not None and threads == 1:
            base_wall = statistics.median(r[0] for r in base)
            base_sampling = statistics.median(r[1] for r in base)
            eff = f"{base_wall / (p * wall):.0%} / {base_sampling / (p * sampling):.0%}"
        print(f"| {p} x {threads} | {wall:.2f} s | {n / wall:.0f} | {sampling:.2f} s "
              f"| {n / sampling:.0f} | {eff} |")  # fmt: skip
        rows.append({"processes": p, "threads": threads, "wall_s": wall, "sampling_s": sampling,
                     "runs": runs})  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"num_samples": n, "steps": args.steps, "cores": cores,
                                    "backend": args.backend, "rows": rows}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
