"""Text to image with a diffusers pipeline and kdpm2's scheduler, on one process or many.

One process::

    python examples/diffusers_torchrun.py --model path/to/pipeline --prompts prompts.txt --out out/

The same images from 2 processes on one machine (gloo on CPU; ``--device cuda`` uses NCCL and
``cuda:LOCAL_RANK``), or from 2 machines with 4 GPUs each::

    torchrun --standalone --nproc-per-node 2 examples/diffusers_torchrun.py --model ... --out out/
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 --rdzv-backend c10d \\
        --rdzv-endpoint host0:29500 --rdzv-id job1 examples/diffusers_torchrun.py --device cuda ...

``prompts.txt`` holds one prompt per line. Image ``i`` is drawn with its own CPU
``torch.Generator``, seeded with ``kdpm2.noise.sample_seed(seed, i)``, and goes through the
pipeline in batch ``i // batch_size`` at position ``i % batch_size``, whichever process runs
that batch; on the CPU every process runs torch on one thread (as torchrun sets it), because a
model's sums depend on how many threads split them. So the images do not depend on how many
processes share the work: to use more cores, start more processes. The processes
take whole batches (the first ones one more when the split is uneven); rank 0 gathers the images
and writes ``out/0000.png, ...`` and ``out/images.npy`` (float32, ``(N, H, W, 3)`` in
``[0, 1]``), each written to a temporary file and then renamed. Rank 0 creates the output
folder before any work; if it cannot, the run stops with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from kdpm2.noise import sample_seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved diffusers pipeline (folder)")
    parser.add_argument("--prompts", type=Path, required=True, help="text file, one per line")
    parser.add_argument("--out", type=Path, required=True, help="output folder (made if missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1, help="images per pipeline call")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser.parse_args(argv)


def shard(n: int, rank: int, world: int, batch_size: int) -> range:
    """Indices of the whole batches that process ``rank`` of ``world`` runs, in rank order."""
    batches = -(-n // batch_size)
    per_rank, extra = divmod(batches, world)
    first = rank * per_rank + min(rank, extra)
    count = per_rank + (rank < extra)
    return range(min(first * batch_size, n), min((first + count) * batch_size, n))


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: never a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_pipeline(model: str, device: torch.device):
    from diffusers import DiffusionPipeline

    from kdpm2 import KDPM2AncestralDiscreteScheduler

    pipe = DiffusionPipeline.from_pretrained(model)
    pipe.scheduler = KDPM2AncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate(pipe, prompts: list[str], indices: range, args: argparse.Namespace) -> np.ndarray:
    """Images ``indices`` of the run, in batches aligned to multiples of ``args.batch_size``."""
    images = []
    for start in range(indices.start, indices.stop, args.batch_size):
        batch = range(start, min(start + args.batch_size, indices.stop))
        generators = [torch.Generator().manual_seed(sample_seed(args.seed, i)) for i in batch]
        out = pipe(
            prompt=[prompts[i] for i in batch],
            generator=generators,
            num_inference_steps=args.steps,
            height=args.height,
            width=args.width,
            output_type="np",
        )
        images.append(np.asarray(out.images, dtype=np.float32))
    return np.concatenate(images) if images else np.zeros((0, 0, 0, 3), np.float32)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        prompts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: --prompts {args.prompts}: cannot read it: {exc}", file=sys.stderr)
        return 2
    # torchrun (and accelerate launch) set these; without them this is the only process
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    shared = world > 1
    if rank == 0:
        try:  # before any work; a failing rank 0 makes torchrun stop the others
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: --out {args.out}: cannot create the folder: {exc}", file=sys.stderr)
            return 2
    device = torch.device("cpu")
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)
    if shared:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    try:
        pipe = load_pipeline(args.model, device)
        # whole batches per process, so a batch holds the same images whatever the split
        mine = shard(len(prompts), rank, world, args.batch_size)
        images = generate(pipe, prompts, mine, args)
        if shared:
            parts: list | None = [None] * world if rank == 0 else None
            dist.gather_object(images, parts, dst=0)
            if rank != 0:
                return 0
            assert parts is not None
            images = np.concatenate([p for p in parts if len(p)])
        from PIL import Image

        for i, image in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
            write_atomic(args.out / f"{i:04d}.png", buffer.getvalue())
        buffer = io.BytesIO()
        np.save(buffer, images)
        write_atomic(args.out / "images.npy", buffer.getvalue())
        print(f"wrote {len(images)} images to {args.out} ({world} process(es))")
        return 0
    finally:
        if shared:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
