"""Train the bundled digits denoiser and write it into src/kdpm2/demo/.

Usage::

    python scripts/train_digits.py            # about 9 minutes on one CPU core

Writes, each atomically (temporary file + os.replace):

- ``digits.safetensors``: float32 weights (an exponential moving average of the trained ones);
- ``manifest.json``: SHA-256 and size of the weights, plus how they were trained;
- ``scheduler_config.json``: the diffusers-style scheduler config of the forward process.

The forward process is the scheduler's: ``x_t = x_0 + sigma_t * eps`` with the network seeing
``x_t / sqrt(sigma_t**2 + 1)`` and predicting ``eps`` (MSE loss). Timesteps are drawn uniformly
from the continuous range ``[0, 999]`` and mapped to sigma by the same log-linear interpolation the
scheduler uses for its fractional timesteps, so the network is trained on every timestep it will
be asked about. At integer timesteps this is exactly ``scheduler.add_noise``.

The run is deterministic for a given seed, thread count and torch version.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

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

SCHEDULER_CONFIG = {
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
        "--out-dir", type=Path, default=ROOT / "src" / "kdpm2" / "demo", help="where to write"
    )
    return parser.parse_args(argv)


def load_training_data() -> np.ndarray:
    """Return sklearn's 1797 digits as float32 rows of 64 pixels in [-1, 1]."""
    return (load_digits().data / 8.0 - 1.0).astype(np.float32)


def learning_rate(step: int, total: int, peak: float, warmup: int = 200) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    data = load_training_data()
    train_sigmas = training_sigmas(SCHEDULER_CONFIG)
    max_t = SCHEDULER_CONFIG["num_train_timesteps"] - 1

    spec = DigitsNetSpec(width=args.width, num_blocks=args.blocks)
    params = {k: torch.from_numpy(v).requires_grad_() for k, v in init_params(spec, rng).items()}
    ema = {k: v.detach().clone() for k, v in params.items()}
    optimiser = torch.optim.AdamW(params.values(), lr=args.lr, weight_decay=0.0)

    start = time.perf_counter()
    window: list[float] = []
    for step in range(args.steps):
        idx = rng.integers(0, len(data), args.batch_size)
        t = rng.uniform(0.0, max_t, args.batch_size)
        sigma = sigmas_at(t, train_sigmas)[:, None]
        eps = rng.standard_normal((args.batch_size, data.shape[1]))
        x_t = data[idx] + sigma * eps
        model_input = torch.from_numpy((x_t / np.sqrt(sigma**2 + 1.0)).astype(np.float32))
        target = torch.from_numpy(eps.astype(np.float32))

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
        "final_loss_last_500_steps": round(final_loss, 5),
        "seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    return weights, info


def write_outputs(out_dir: Path, weights: dict[str, np.ndarray], info: dict[str, object]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / "digits.safetensors"
    write_bytes_atomic(weights_path, save(weights, metadata={"format": "kdpm2-digits-mlp"}))
    sha256, size = file_digest(weights_path)
    manifest = {"files": {weights_path.name: {"sha256": sha256, "size": size}}, "training": info}
    write_bytes_atomic(out_dir / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    config = json.dumps(SCHEDULER_CONFIG, indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(out_dir / "scheduler_config.json", config.encode())
    print(f"wrote {weights_path} ({size} bytes, sha256 {sha256[:16]}...)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    weights, info = train(args)
    write_outputs(args.out_dir, weights, info)
    print(f"final loss {info['final_loss_last_500_steps']}, {info['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
