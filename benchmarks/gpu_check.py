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

4. The same pipeline loop with a CPU generator (what ``torch.manual_seed`` returns; drawn on
   the host into pinned memory and copied without blocking), one CPU generator per sample,
   and the functional sampler (one sigma per step, and one per sample) run under the sync
   check too; the CPU-generator loop gives diffusers' numbers.
5. A whole loop with a tiny conv net compiles with ``torch.compile(mode="reduce-overhead",
   fullgraph=True)`` (CUDA graphs; none skipped) and replays the eager numbers.
6. bfloat16 and float16 latents run the loop without a sync and keep their dtype.
7. Device time per model call of the pipeline loop (``return_dict=False``) against the bare
   kernels it cannot avoid (``bench.py``'s limit plus the x0 add), measured with CUDA events.

Exit status: 0 when every check passes, or when there is no CUDA device (it prints
"no CUDA device"); 1 when a check fails. ``--cpu`` runs every check on the CPU instead (the
sync checks and CUDA graphs then check nothing): a smoke test of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import kdpm2

sys.path.insert(0, str(Path(__file__).parent))
from bench import (
    Case,
    LimitPlan,
    _torch_limit_x0_loop,
    kdpm2_like_loop,
    paired_ratio,
    pipeline_loop,
    race,
    versions,
)

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


@contextlib.contextmanager
def no_sync(device: torch.device) -> Iterator[None]:
    """Turn synchronizing CUDA calls into errors inside the block (nothing on the CPU)."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pipeline(sch: Any, x: Any, generator: Any, model: Callable[[Any, Any], Any]) -> Any:
    for t in sch.timesteps:
        x = sch.step(model(sch.scale_model_input(x, t), t), t, x, generator=generator,
                     return_dict=False)[0]  # fmt: skip
    return x


def _instant(x: Any, t: Any) -> Any:
    return x * 0.5


def check_no_sync_cpu_generator(device: torch.device) -> str:
    """The pipeline loop with CPU generators and device latents: no sync, diffusers' numbers."""
    from bench import DiffusersScheduler

    shape = (2, 4, 64, 64)
    outs = {}
    for name, sch in [("kdpm2", _scheduler(device, begin=False)), ("diffusers", None)]:
        if sch is None:
            sch = DiffusersScheduler()
            sch.set_timesteps(STEPS, device=device)
        x = _latent(shape, device, float(sch.init_noise_sigma))
        gen = torch.Generator().manual_seed(0)
        if name == "kdpm2":
            sch.timesteps  # noqa: B018 - built before the checked region
            with no_sync(device):
                outs[name] = _pipeline(sch, x, gen, _instant)
        else:
            outs[name] = _pipeline(sch, x, gen, _instant)
    synchronize(device)
    diff = float((outs["kdpm2"] - outs["diffusers"]).abs().max())
    if not diff <= 1e-4 * max(1.0, float(outs["diffusers"].abs().max())):
        raise AssertionError(f"CPU-generator loop differs from diffusers': {diff:.3g}")
    sch = _scheduler(device, begin=False)
    x = _latent(shape, device, float(sch.init_noise_sigma))
    gens = [torch.Generator().manual_seed(s) for s in range(shape[0])]
    sch.timesteps  # noqa: B018
    with no_sync(device):
        each = _pipeline(sch, x, gens, _instant)
    alone = _pipeline(_scheduler(device, begin=False), x[1:], [torch.Generator().manual_seed(1)],
                      _instant)  # fmt: skip
    synchronize(device)
    if not torch.equal(each[1:], alone):
        raise AssertionError(f"per-sample CPU generators: {_diff(each[1:], alone)}")
    return f"one and {shape[0]} CPU generators, no sync; max |diff| vs diffusers {diff:.2g}"


def check_functional_no_sync(device: torch.device) -> str:
    """``sample_dpm_2_ancestral`` with host sigmas, one per step and one per sample: no sync."""
    shape = (2, 4, 32, 32)
    sigmas = kdpm2.get_sigmas_karras(STEPS, 0.03, 14.6, device="cpu")
    per_sample = torch.stack([sigmas, sigmas * 0.5], dim=1)  # (n + 1, B)

    def model(x: Any, sigma: Any) -> Any:
        return x / (1 + kdpm2._xp.append_dims(sigma, x.ndim) ** 2)

    results = []
    for levels in (sigmas, per_sample):
        x = _latent(shape, device, 14.6)
        with no_sync(device):
            out = kdpm2.sample_dpm_2_ancestral(model, x, levels, disable=True)
        results.append(out)
    synchronize(device)
    if not all(bool(torch.isfinite(r).all()) for r in results):
        raise AssertionError("the functional sampler gave non-finite values")
    return "one sigma per step and one per sample, no sync"


class TinyNet(torch.nn.Module):
    """A small conv net standing in for a UNet: enough kernels to make CUDA graphs count."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(4, 32, 3, padding=1)
        self.b = torch.nn.Conv2d(32, 4, 3, padding=1)

    def forward(self, x: Any, t: Any) -> Any:
        return self.b(torch.nn.functional.silu(self.a(x) + t / 1000.0))


def check_compiled_loop(device: torch.device) -> str:
    """``torch.compile(mode="reduce-overhead", fullgraph=True)`` of a whole loop equals eager."""
    import torch._dynamo.utils as dynamo_utils

    shape = (2, 4, 32, 32)
    torch.manual_seed(0)
    net = TinyNet().to(device).eval()
    x = _latent(shape, device, 14.6)
    sch = kdpm2.KDPM2AncestralDiscreteScheduler(eta=0.0)  # deterministic: eager vs compiled
    sch.set_timesteps(10, device=device)

    def loop(x: Any) -> Any:
        return _pipeline(sch, x, None, net)

    with torch.no_grad():
        sch.set_timesteps(10, device=device)
        sch.set_begin_index(0)  # as a pipeline does, outside the compiled loop
        ref = loop(x)
        compiled = torch.compile(loop, mode="reduce-overhead", fullgraph=True)
        worst = 0.0
        for _ in range(3):  # warm-up, recording, replays
            sch.set_timesteps(10, device=device)
            sch.set_begin_index(0)
            out = compiled(x).clone()
            worst = max(worst, float((out - ref).abs().max()))
    synchronize(device)
    scale = float(ref.abs().max())
    if not worst <= 1e-3 * max(1.0, scale):
        raise AssertionError(f"compiled loop differs from eager: max |diff| {worst:.3g}")
    skips = dict(dynamo_utils.counters["inductor"]).get("cudagraph_skips", 0)
    if device.type == "cuda" and skips:
        raise AssertionError(f"inductor skipped CUDA graphs {skips} time(s)")
    return f"one graph, CUDA graphs on {device.type}, max |diff| vs eager {worst:.2g}"


def check_low_precision(device: torch.device) -> str:
    """bfloat16 and float16 latents: no sync, dtype kept, finite, near the float32 loop."""
    shape = (1, 4, 64, 64)
    found = []
    ref = None
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        sch = _scheduler(device, begin=False)
        x = _latent(shape, device, float(sch.init_noise_sigma)).to(dtype)
        gen = torch.Generator(device=device).manual_seed(0)
        sch.timesteps  # noqa: B018
        with no_sync(device):
            out = _pipeline(sch, x, gen, _instant)
        synchronize(device)
        if out.dtype != dtype or not bool(torch.isfinite(out.float()).all()):
            raise AssertionError(f"{dtype}: gave {out.dtype} / non-finite values")
        if ref is None:
            ref = out
            continue
        rel = float((out.float() - ref).abs().max()) / max(1.0, float(ref.abs().max()))
        found.append(f"{str(dtype).removeprefix('torch.')} rel. diff {rel:.2g}")
    return "no sync; " + ", ".join(found)


def time_device(device: torch.device, reps: int) -> list[dict[str, Any]]:
    """Device time per model call: the pipeline loop against the bare kernels plus x0."""
    rows = []
    for shape in [(1, 4, 64, 64), (1, 4, 128, 128)]:
        sch = _scheduler(device, begin=False)
        plan = LimitPlan.from_schedule(sch.schedule)
        x = _latent(shape, device, float(sch.init_noise_sigma))
        calls = len(sch.timesteps)

        def timed(run: Callable[[], Any]) -> float:
            if device.type != "cuda":
                import time

                start_s = time.perf_counter()
                run()
                return time.perf_counter() - start_s
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        def kdpm2_run(sch: Any = sch, x: Any = x) -> Any:
            sch.set_timesteps(STEPS, device=device)
            return pipeline_loop((sch, x, torch.Generator(device=device).manual_seed(0)))

        def limit_run(sch: Any = sch, x: Any = x, plan: LimitPlan = plan) -> Any:
            gen = torch.Generator(device=device).manual_seed(0)
            return _torch_limit_x0_loop((plan, sch.timesteps, x, gen))

        with torch.no_grad():
            kdpm2_run(), limit_run()
            k_times, l_times = [], []
            for r in range(reps):
                pair = [(k_times, kdpm2_run), (l_times, limit_run)]
                for times, run in pair if r % 2 == 0 else pair[::-1]:
                    times.append(timed(run))
        rows.append(
            {
                "shape": list(shape),
                "kdpm2_us_per_call": statistics.median(k_times) / calls * 1e6,
                "limit_us_per_call": statistics.median(l_times) / calls * 1e6,
                "overhead": paired_ratio(k_times, l_times),
            }
        )
    return rows


def check_no_sync(device: torch.device) -> str:
    """Run a whole pipeline-style loop with synchronizing CUDA calls turned into errors."""
    sch = _scheduler(device, begin=False)
    timesteps = sch.timesteps  # built (host-to-device copy) before the checked region
    x = _latent((2, 4, 64, 64), device, sch.init_noise_sigma)
    gen = torch.Generator(device=device).manual_seed(0)
    with no_sync(device):
        try:
            x.sum().item()
        except RuntimeError:
            pass
        else:
            if device.type == "cuda":
                raise AssertionError("sync debug mode let .item() through; it proves nothing")
        for t in timesteps:
            x = _one_call(sch, x, t, gen)
    synchronize(device)
    if not bool(torch.isfinite(x).all()):
        raise AssertionError("the loop under sync debug mode gave non-finite values")
    return f"{len(timesteps)} calls, no synchronizing CUDA call"


def check_flow_no_sync(device: torch.device) -> str:
    """The flow scheduler's pipeline loop (bfloat16 latents, global RNG) without a host sync."""
    sch = kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler(shift=3.0)
    sch.set_timesteps(STEPS, device=device)
    timesteps = sch.timesteps
    x = _latent((1, 16, 64, 64), device, 1.0).to(torch.bfloat16)
    with no_sync(device):
        for t in timesteps:  # an instant "model": the velocity is the sample itself
            x = sch.step(x * 0.5, t, x, return_dict=False)[0]
    synchronize(device)
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
                synchronize(device)
                return sch, x_init, torch.Generator(device=device).manual_seed(0)

            return setup

        def run(state: Any) -> Any:
            out = kdpm2_like_loop(state)
            synchronize(device)
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
    parser.add_argument("--cpu", action="store_true", help="smoke-test the script on the CPU")
    args = parser.parse_args(argv)
    if args.cpu:
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    else:
        device = torch.device("cuda", torch.cuda.current_device())
    found = {k: v for k, v in versions(None).items() if k != "k-diffusion"}  # not used here
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke test)"
    info = {"versions": found, "device": name}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"device:   {info['device']}")

    results: dict[str, Any] = {**info, "checks": {}}
    failed = False
    checks: list[tuple[str, Callable[[torch.device], str]]] = [
        ("no host sync in the loop", check_no_sync),
        ("no host sync with CPU generators", check_no_sync_cpu_generator),
        ("no host sync in the functional sampler", check_functional_no_sync),
        ("no host sync in bfloat16 and float16", check_low_precision),
        ("no host sync in the flow loop", check_flow_no_sync),
        ("compiled loop with CUDA graphs", check_compiled_loop),
    ]
    if device.type == "cuda":
        checks.insert(1, ("CUDA graph capture of one call", check_graph_capture))
    for name, check in checks:
        try:
            detail, ok = check(device), True
        except Exception as e:  # report every check, then fail once at the end
            detail, ok = f"{type(e).__name__}: {e}", False
            traceback.print_exc()
        failed = failed or not ok
        results["checks"][name] = {"ok": ok, "detail": detail}
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    reps = 5 if args.quick else 21

    def loop_line(r: dict[str, Any]) -> str:
        return (
            f"loop {tuple(r['shape'])}: kdpm2 {r['kdpm2_median_s'] * 1e3:.2f} ms, diffusers "
            f"{r['diffusers_median_s'] * 1e3:.2f} ms, speedup {r['speedup']:.2f}x "
            f"(max |diff| {r['max_abs_diff_vs_diffusers']:.2g})"
        )

    def device_line(r: dict[str, Any]) -> str:
        return (
            f"device time per call {tuple(r['shape'])}: kdpm2 pipeline "
            f"{r['kdpm2_us_per_call']:.1f} us, bare kernels + x0 {r['limit_us_per_call']:.1f} us, "
            f"ratio {r['overhead']:.2f}"
        )

    timings = [
        ("loops", "timing vs diffusers", time_loops, loop_line),
        ("device_time", "device time per call", time_device, device_line),
    ]
    for key, title, timing, line in timings:
        try:
            rows = timing(device, reps)
        except Exception as e:  # report, then fail once at the end
            failed, rows = True, []
            traceback.print_exc()
            print(f"FAIL  {title}: {type(e).__name__}: {e}")
        for r in rows:
            print(line(r))
        results[key] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
