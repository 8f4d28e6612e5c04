"""Train a bundled digits network and write it into src/kdpm2/demo/ (or demo/digits_flow/).

Usage::

    python scripts/train_digits.py            # the diffusion model, about 9 minutes on one core
    python scripts/train_digits.py --flow     # the rectified-flow model, into demo/digits_flow/

Writes, each atomically (temporary file + os.replace):

- ``digits.safetensors``: float32 weights (an exponential moving average of the trained ones);
- ``manifest.json``: SHA-256 and size of the weights, plus how they were trained;
- ``scheduler_config.json``: the diffusers-style scheduler config of the forward process.

Both models share the network, the data, the optimiser and the schedule; only the forward process
and the loss target differ.

Diffusion (default): the forward process is the scheduler's, ``x_t = x_0 + sigma_t * eps`` with the
network seeing ``x_t / sqrt(sigma_t**2 + 1)`` and predicting ``eps`` (MSE loss). Timesteps are
drawn uniformly from the continuous range ``[0, 999]`` and mapped to sigma by the same log-linear
interpolation the scheduler uses for its fractional timesteps, so the network is trained on every
timestep it will be asked about. At integer timesteps this is exactly ``scheduler.add_noise``.

Rectified flow (``--flow``): ``x_s = (1 - s) * x_0 + s * eps`` with ``s`` uniform in ``[0, 1]``
(Liu et al. 2022; Esser et al. 2024, eq. 3 with shift 1); the network sees ``x_s`` unscaled and
the timestep ``t = 1000 * s`` (the timesteps of diffusers' FlowMatchEulerDiscreteScheduler, sigma
times ``num_train_timesteps``) and predicts the velocity ``v = eps - x_0`` (MSE loss).

The run is deterministic for a given seed, thread count and torch version.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save
from sklearn.datasets import load_digits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from kdpm2._io import write_bytes_atomic  # noqa: E402
from kdpm2.demo._sigmas import sigmas_at, training_sigmas  # noqa: E402
from kdpm2.demo.digits import (  # noqa: E402
    DigitsNetSpec,
    file_digest,
    forward_torch,
    init_params,
    spec_from_params,
)
from kdpm2.flow import FLOW_DEFAULTS  # noqa: E402

SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "KDPM2AncestralDiscreteScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "linspace",
    "steps_offset": 0,
    "trained_betas": None,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
}

# the flow scheduler's config at its defaults (FlowMatchEulerDiscreteScheduler's keys and defaults,
# shift 1, which the flow model is trained for, plus eta and s_noise)
FLOW_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchKDPM2AncestralDiscreteScheduler",
    **dataclasses.asdict(FLOW_DEFAULTS),
}

DEMO_DIR = ROOT / "src" / "kdpm2" / "demo"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30_000, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    parser.add_argument("--width", type=int, default=DigitsNetSpec().width)
    parser.add_argument("--blocks", type=int, default=DigitsNetSpec().num_blocks)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (at most 2)")
    parser.add_argument(
        "--flow",
        action="store_true",
        help="train the rectified-flow (velocity) model instead of the diffusion (eps) one",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help=f"where to write (default: {DEMO_DIR}, or its digits_flow/ with --flow)",
    )
    args = parser.parse_args(argv)
    if args.out_dir is None:
        args.out_dir = DEMO_DIR / "digits_flow" if args.flow else DEMO_DIR
    return args


def load_training_data() -> np.ndarray:
    """Return sklearn's 1797 digits as float32 rows of 64 pixels in [-1, 1]."""
    return (load_digits().data / 8.0 - 1.0).astype(np.float32)


def learning_rate(step: int, total: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def diffusion_batch(
    rng: np.random.Generator, x0: np.ndarray, train_sigmas: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (network input, timestep, target) of the eps-prediction model for clean ``x0``."""
    t = rng.uniform(0.0, len(train_sigmas) - 1, len(x0))
    sigma = sigmas_at(t, train_sigmas)[:, None]
    eps = rng.standard_normal(x0.shape)
    x_t = x0 + sigma * eps
    return x_t / np.sqrt(sigma**2 + 1.0), t, eps


def flow_batch(
    rng: np.random.Generator, x0: np.ndarray, num_train_timesteps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (network input, timestep, target) of the velocity model for clean ``x0``."""
    s = rng.uniform(0.0, 1.0, len(x0))
    eps = rng.standard_normal(x0.shape)
    x_s = (1.0 - s[:, None]) * x0 + s[:, None] * eps
    return x_s, s * num_train_timesteps, eps - x0


def train(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    data = load_training_data()
    train_sigmas = training_sigmas(SCHEDULER_CONFIG)
    num_train_timesteps = int(FLOW_SCHEDULER_CONFIG["num_train_timesteps"])

    spec = DigitsNetSpec(width=args.width, num_blocks=args.blocks)
    params = {k: torch.from_numpy(v).requires_grad_() for k, v in init_params(spec, rng).items()}
    ema = {k: v.detach().clone() for k, v in params.items()}
    optimiser = torch.optim.AdamW(params.values(), lr=args.lr, weight_decay=0.0)

    start = time.perf_counter()
    window: list[float] = []
    for step in range(args.steps):
        x0 = data[rng.integers(0, len(data), args.batch_size)]
        if args.flow:
            inputs, t, targets = flow_batch(rng, x0, num_train_timesteps)
        else:
            inputs, t, targets = diffusion_batch(rng, x0, train_sigmas)
        model_input = torch.from_numpy(inputs.astype(np.float32))
        target = torch.from_numpy(targets.astype(np.float32))

        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        loss = torch.mean((forward_torch(params, model_input, t) - target) ** 2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for name, value in params.items():
                ema[name].lerp_(value.detach(), 1.0 - decay)

        window.append(loss.item())
        if (step + 1) % 500 == 0 or step + 1 == args.steps:
            elapsed = time.perf_counter() - start
            print(
                f"step {step + 1:6d}/{args.steps}  loss {np.mean(window):.4f}  {elapsed:6.0f} s",
                flush=True,
            )
            final_loss = float(np.mean(window))
            window = []

    weights = {k: v.numpy().astype(np.float32) for k, v in ema.items()}
    spec_from_params(weights)
    info: dict[str, object] = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ema": args.ema,
        "seed": args.seed,
        "threads": args.threads,
        "width": spec.width,
        "num_blocks": spec.num_blocks,
        "embed_dim": spec.embed_dim,
        "objective": "velocity, x_s = (1 - s) x_0 + s eps, s ~ U[0, 1], t = 1000 s"
        if args.flow
        else "epsilon, x_t = x_0 + sigma_t eps, t ~ U[0, 999]",
        "final_loss_last_500_steps": round(final_loss, 5),
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    return weights, info


def write_outputs(
    out_dir: Path,
    weights: dict[str, np.ndarray],
    info: dict[str, object],
    scheduler_config: dict[str, Any],
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / "digits.safetensors"
    write_bytes_atomic(weights_path, save(weights, metadata={"format": "kdpm2-digits-mlp"}))
    sha256, size = file_digest(weights_path)
    manifest = {"files": {weights_path.name: {"sha256": sha256, "size": size}}, "training": info}
    write_bytes_atomic(out_dir / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    config = json.dumps(scheduler_config, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(out_dir / "scheduler_config.json", config.encode())
    print(f"wrote {weights_path} ({size} bytes, sha256 {sha256[:16]}...)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    weights, info = train(args)
    config = FLOW_SCHEDULER_CONFIG if args.flow else SCHEDULER_CONFIG
    write_outputs(args.out_dir, weights, info, config)
    print(f"final loss {info['final_loss_last_500_steps']}, {info['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
