"""Check kdpm2 on a CUDA device: no host syncs, CUDA-graph capture, and timing vs diffusers.

Run by hand on a machine with a GPU (CI has none)::

    .venv/bin/python benchmarks/gpu_check.py [--quick] [--out PATH]

1. A full 25-step loop runs under ``torch.cuda.set_sync_debug_mode("error")``, exactly as a
   pipeline writes it (iterating over ``scheduler.timesteps`` on the device, no
   ``set_begin_index``): any host-device sync in ``scale_model_input`` or ``step``, the first
   call's start-index lookup included, raises. A deliberate ``.item()`` first proves the mode
   bites.
2. One model call (``scale_model_input`` + ``step``) is captured in a CUDA graph, for a first
   half and for a second half that draws noise from a CUDA generator; each replay must give
   exactly the eager result (the second half after re-seeding the generator).
3. The loop is timed against diffusers on the same device (alternating repetitions, medians).

Exit status: 0 when every check passes, or when there is no CUDA device (it prints
"no CUDA device"); 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kdpm2

sys.path.insert(0, str(Path(__file__).parent))
from bench import Case, kdpm2_like_loop, paired_ratio, race, versions

STEPS = 25
DEFAULT_OUT = Path(__file__).parent / "results" / "gpu_check.json"


def _scheduler(device: torch.device, begin: bool = True) -> kdpm2.KDPM2AncestralDiscreteScheduler:
    sch = kdpm2.KDPM2AncestralDiscreteScheduler()
    sch.set_timesteps(STEPS, device=device)
    if begin:
        sch.set_begin_index(0)
    return sch


def _latent(shape: tuple[int, ...], device: torch.device, sigma: float, seed: int = 1) -> Any:
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(shape, generator=gen, device=device) * sigma


def check_no_sync(device: torch.device) -> str:
    """Run a whole pipeline-style loop with synchronizing CUDA calls turned into errors."""
    sch = _scheduler(device, begin=False)
    timesteps = sch.timesteps  # built (host-to-device copy) before the checked region
    x = _latent((2, 4, 64, 64), device, sch.init_noise_sigma)
    gen = torch.Generator(device=device).manual_seed(0)
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        try:
            x.sum().item()
        except RuntimeError:
            pass
        else:
            raise AssertionError("sync debug mode let .item() through; this check proves nothing")
        for t in timesteps:
            x = _one_call(sch, x, t, gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    if not bool(torch.isfinite(x).all()):
        raise AssertionError("the loop under sync debug mode gave non-finite values")
    return f"{len(timesteps)} calls, no synchronizing CUDA call"


def check_flow_no_sync(device: torch.device) -> str:
    """The flow scheduler's pipeline loop (bfloat16 latents, global RNG) without a host sync."""
    sch = kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler(shift=3.0)
    sch.set_timesteps(STEPS, device=device)
    timesteps = sch.timesteps
    x = _latent((1, 16, 64, 64), device, 1.0).to(torch.bfloat16)
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for t in timesteps:  # an instant "model": the velocity is the sample itself
            x = sch.step(x * 0.5, t, x, return_dict=False)[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    if x.dtype != torch.bfloat16 or not bool(torch.isfinite(x.float()).all()):
        raise AssertionError(f"the flow loop gave {x.dtype} / non-finite values")
    return f"{len(timesteps)} calls, no synchronizing CUDA call"


def _one_call(sch: Any, x: Any, t: Any, gen: Any) -> Any:
    return sch.step(sch.scale_model_input(x, t), t, x, generator=gen).prev_sample


def check_graph_capture(device: torch.device) -> str:
    """Capture a first-half and a second-half call in CUDA graphs; replays equal eager runs."""
    shape = (2, 4, 64, 64)
    eager = _scheduler(device)
    ts = eager.timesteps
    x0 = _latent(shape, device, eager.init_noise_sigma)
    x1 = _one_call(eager, x0, ts[0], None)
    x2 = _one_call(eager, x1, ts[1], torch.Generator(device=device).manual_seed(123))

    # first half: capture call 0, replay on the same input, then on a new one
    sch = _scheduler(device)
    static_x = x0.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = _one_call(sch, static_x, ts[0], None)
    graph.replay()
    torch.cuda.synchronize(device)
    if not torch.equal(static_out, x1):
        raise AssertionError(f"first-half replay differs: {_diff(static_out, x1)}")
    other = _latent(shape, device, float(eager.init_noise_sigma), seed=7)
    static_x.copy_(other)
    graph.replay()
    expected = _one_call(_scheduler(device), other, ts[0], None)
    if not torch.equal(static_out, expected):
        raise AssertionError(
            f"first-half replay on new input differs: {_diff(static_out, expected)}"
        )

    # second half: run call 0 eagerly, capture call 1 (which draws noise from a CUDA generator)
    sch = _scheduler(device)
    static_x = _one_call(sch, x0, ts[0], None)
    gen = torch.Generator(device=device)
    graph = torch.cuda.CUDAGraph()
    graph.register_generator_state(gen)
    with torch.cuda.graph(graph):
        static_out = _one_call(sch, static_x, ts[1], gen)
    for _ in range(2):
        gen.manual_seed(123)
        graph.replay()
        torch.cuda.synchronize(device)
        if not torch.equal(static_out, x2):
            raise AssertionError(f"second-half replay differs: {_diff(static_out, x2)}")
    graph.replay()  # without re-seeding the generator moves on: the noise must change
    if torch.equal(static_out, x2):
        raise AssertionError("a replay without re-seeding repeated the noise")
    return "first half and second half (CUDA generator) replay the eager result exactly"


def _diff(a: Any, b: Any) -> str:
    return f"max |difference| {float((a - b).abs().max()):.3g}"


def time_loops(device: torch.device, reps: int) -> list[dict[str, Any]]:
    """Time the 25-step loop, kdpm2 vs diffusers, on the device (alternating repetitions)."""
    from bench import DiffusersScheduler

    rows = []
    for shape in [(1, 4, 64, 64), (4, 4, 128, 128)]:
        k_sch = kdpm2.KDPM2AncestralDiscreteScheduler()
        d_sch = DiffusersScheduler()
        x_init = _latent(shape, device, k_sch.init_noise_sigma)

        def setup_for(sch: Any, x_init: Any = x_init) -> Callable[[], Any]:
            def setup() -> Any:
                sch.set_timesteps(STEPS, device=device)
                torch.cuda.synchronize(device)
                return sch, x_init, torch.Generator(device=device).manual_seed(0)

            return setup

        def run(state: Any) -> Any:
            out = kdpm2_like_loop(state)
            torch.cuda.synchronize(device)
            return out

        cases = {
            "kdpm2": Case(run, setup_for(k_sch), number=1),
            "diffusers": Case(run, setup_for(d_sch), number=1),
        }
        outs = {name: c.run(c.setup()) for name, c in cases.items()}
        diff = float((outs["kdpm2"] - outs["diffusers"]).abs().max())
        if not diff <= 1e-4 * max(1.0, float(outs["diffusers"].abs().max())):
            raise AssertionError(f"kdpm2 and diffusers loops disagree on {shape}: {diff:.3g}")
        with torch.no_grad():
            times = race(cases, reps, 0.0)
        rows.append(
            {
                "shape": list(shape),
                "kdpm2_median_s": statistics.median(times["kdpm2"]),
                "diffusers_median_s": statistics.median(times["diffusers"]),
                "speedup": paired_ratio(times["diffusers"], times["kdpm2"]),
                "max_abs_diff_vs_diffusers": diff,
                "kdpm2_times_s": times["kdpm2"],
                "diffusers_times_s": times["diffusers"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check kdpm2 on a CUDA device.")
    parser.add_argument("--quick", action="store_true", help="few timing repetitions")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results path")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    device = torch.device("cuda", torch.cuda.current_device())
    found = {k: v for k, v in versions(None).items() if k != "k-diffusion"}  # not used here
    info = {"versions": found, "device": torch.cuda.get_device_name(device)}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"device:   {info['device']}")

    results: dict[str, Any] = {**info, "checks": {}}
    failed = False
    checks: list[tuple[str, Callable[[torch.device], str]]] = [
        ("no host sync in the loop", check_no_sync),
        ("CUDA graph capture of one call", check_graph_capture),
        ("no host sync in the flow loop", check_flow_no_sync),
    ]
    for name, check in checks:
        try:
            detail, ok = check(device), True
        except Exception as e:  # report every check, then fail once at the end
            detail, ok = f"{type(e).__name__}: {e}", False
            traceback.print_exc()
        failed = failed or not ok
        results["checks"][name] = {"ok": ok, "detail": detail}
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    try:
        rows = time_loops(device, 5 if args.quick else 21)
    except Exception as e:
        failed = True
        rows = []
        traceback.print_exc()
        print(f"FAIL  timing vs diffusers: {type(e).__name__}: {e}")
    for r in rows:
        print(
            f"loop {tuple(r['shape'])}: kdpm2 {r['kdpm2_median_s'] * 1e3:.2f} ms, diffusers "
            f"{r['diffusers_median_s'] * 1e3:.2f} ms, speedup {r['speedup']:.2f}x "
            f"(max |diff| {r['max_abs_diff_vs_diffusers']:.2g})"
        )
    results["loops"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
