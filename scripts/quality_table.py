"""Print the digits quality check for several step counts as a Markdown table.

Usage::

    python scripts/quality_table.py                 # 300 samples at 5/10/20/50 steps
    python scripts/quality_table.py --karras        # also with Karras sigmas
    python scripts/quality_table.py --models digits # only the diffusion model

Each row samples a bundled digits network (``digits``: diffusion, ``digits-flow``: rectified flow
with the flow-matching sampler) with ``kdpm2 sample``'s code (NumPy backend) and scores the
samples with ``kdpm2.demo.quality.digit_quality``: the share of samples a classifier trained on
real digits is >= 90% sure about (vs. held-out real digits), the share of the rarest predicted
class, and the mean nearest-neighbour distance among samples (vs. as many real digits).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kdpm2 import cli
from kdpm2.demo.quality import digit_quality


def _floor3(value: float) -> float:
    """Round down to 3 decimals, so a ratio printed as 0.850 never hides a failing 0.8497."""
    return math.floor(value * 1000) / 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--karras", action="store_true", help="add rows with Karras sigmas")
    parser.add_argument(
        "--models", nargs="+", choices=("digits", "digits-flow"), default=["digits", "digits-flow"]
    )
    args = parser.parse_args(argv)

    print(
        "| model | sigmas | steps | model calls | confident (real) | ratio (>= 0.85) "
        "| rarest class (>= 0.04) | spread ratio (>= 0.5) | check | seconds |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for model_name, karras, steps in itertools.product(
        args.models, (False, True) if args.karras else (False,), args.steps
    ):
        options = cli.SampleOptions(
            model=model_name, num_samples=args.num_samples, steps=steps, seed=args.seed,
            eta=args.eta, karras=karras,
        )  # fmt: skip
        model, scheduler = cli.build_model(options), cli.build_scheduler(options)
        start = time.perf_counter()
        samples = cli.sample(
            model,
            scheduler,
            num_samples=options.num_samples,
            sample_shape=cli.SAMPLE_SHAPE[options.model],
            seed=options.seed,
        )
        seconds = time.perf_counter() - start
        q = digit_quality(cli.to_output(samples, options.model))
        print(
            f"| {model_name} | {'karras' if karras else 'default'} | {steps} "
            f"| {len(scheduler.timesteps)} "
            f"| {q.confident_share:.2f} ({q.real_confident_share:.2f}) "
            f"| {_floor3(q.confident_ratio):.3f} | {q.min_class_share:.3f} "
            f"| {q.spread_ratio:.2f} "
            f"| {'pass' if q.passed else 'fail'} | {seconds:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
