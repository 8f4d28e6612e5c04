"""torch.compile: the step compiles without graph breaks, a pipeline loop compiles whole.

On a GPU the scheduler's cost is what keeps the device from running ahead: graph breaks,
recompilations and host reads. These tests hold the compile properties on the CPU (Dynamo
traces the same Python on any device): no break in a step, one graph for a whole loop, a few
compilations of a compiled ``step`` for a whole loop, breaks only at a generator's draw, and
the eager numbers. ``aot_eager`` runs the traced graph on eager kernels (quick to compile);
one test compiles with inductor, the backend users run.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.testing import CompileCounter  # noqa: E402

import kdpm2  # noqa: E402

STEPS = 6


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Any:
    dynamo.reset()
    yield
    dynamo.reset()


def _scheduler(kind: str, begin: bool = True, **config: Any) -> Any:
    if kind == "flow":
        sch = kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler(**config)
    else:
        sch = kdpm2.KDPM2AncestralDiscreteScheduler(beta_schedule="scaled_linear", **config)
    sch.set_timesteps(STEPS)
    if begin:
        sch.set_begin_index(0)
    return sch


def _model(x: Any, t: Any) -> Any:
    return torch.tanh(x * 0.3) + t * 1e-4


def _loop(sch: Any, x: Any, generator: Any = None, step: Any = None) -> Any:
    step = step or sch.step
    for t in sch.timesteps:
        x_in = sch.scale_model_input(x, t)
        x = step(_model(x_in, t), t, x, generator=generator, return_dict=False)[0]
    return x


def _x() -> Any:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * 10


def _assert_eager_numbers(out: Any, ref: Any) -> None:
    # compiled arithmetic rounds `x + a * y` twice where eager's torch.add(x, y, alpha=a)
    # fuses it: a few float32 ulps of the sample's scale over a loop, not a different result
    scale = float(ref.abs().max())
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * scale)


KINDS = ["diffusion", "flow"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_half_of_a_step_compiles_without_a_break(kind: str) -> None:
    sch = _scheduler(kind)
    x = _x()
    t0, t1 = sch.timesteps[0], sch.timesteps[1]

    def first(x: Any) -> Any:
        return sch.step(_model(sch.scale_model_input(x, t0), t0), t0, x, return_dict=False)[0]

    def second(x: Any) -> Any:
        return sch.step(_model(sch.scale_model_input(x, t1), t1), t1, x, return_dict=False)[0]

    explained = dynamo.explain(first)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    x = first(x)  # eager: the loop now stands at the midpoint call
    explained = dynamo.explain(second)(x)
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("begin", [True, False], ids=["set_begin_index", "found"])
def test_a_pipeline_loop_compiles_whole_with_the_eager_numbers(kind: str, begin: bool) -> None:
    x = _x()
    torch.manual_seed(0)
    ref = _loop(_scheduler(kind, begin), x)
    sch = _scheduler(kind, begin)
    compiled = torch.compile(lambda x: _loop(sch, x), fullgraph=True, backend="aot_eager")
    torch.manual_seed(0)
    _assert_eager_numbers(compiled(x), ref)


def test_the_loop_compiles_whole_with_inductor() -> None:
    pytest.importorskip("torch._inductor")
    x = _x()
    torch.manual_seed(0)
    ref = _loop(_scheduler("diffusion"), x)
    sch = _scheduler("diffusion")
    compiled = torch.compile(lambda x: _loop(sch, x), fullgraph=True)
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):  # the global RNG's own draws
        torch.manual_seed(0)
        out = compiled(x)
    _assert_eager_numbers(out, ref)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seeded", [False, True], ids=["global-rng", "generator"])
def test_a_compiled_step_compiles_a_few_times_whatever_the_step_count(
    kind: str, seeded: bool
) -> None:
    # the step index stays symbolic: graphs for the loop's first call and for each phase (a
    # generator's draw splits a second half in two), not one per step
    def generator() -> Any:
        return torch.Generator().manual_seed(3) if seeded else None

    x = _x()
    counts = []
    for steps in (STEPS, 2 * STEPS):
        dynamo.reset()
        torch.manual_seed(0)
        sch = _scheduler(kind)
        sch.set_timesteps(steps)
        ref = _loop(sch, x, generator())
        counter = CompileCounter()
        sch.set_timesteps(steps)
        step = torch.compile(sch.step, backend=counter)
        torch.manual_seed(0)
        _assert_eager_numbers(_loop(sch, x, generator(), step), ref)
        counts.append(counter.frame_count)
        sch.set_timesteps(steps)  # a second loop on the same schedule compiles nothing new
        _loop(sch, x, generator(), step)
        assert counter.frame_count == counts[-1]
    assert counts[0] == counts[1] <= (8 if seeded else 4), counts  # (a draw adds resume frames)


@pytest.mark.parametrize("kind", KINDS)
def test_with_a_generator_the_loop_breaks_only_at_the_draw(kind: str) -> None:
    sch = _scheduler(kind)
    generator = torch.Generator().manual_seed(0)
    explained = dynamo.explain(lambda x: _loop(sch, x, generator))(_x())
    assert explained.graph_break_count > 0  # a torch.Generator cannot be traced
    where = collections.Counter(
        (b.user_stack[-1].filename.rsplit("/", 1)[-1], b.user_stack[-1].name)
        for b in explained.break_reasons
    )
    assert set(where) == {("noise.py", "draw")}, where


def test_a_compiled_loop_that_starts_mid_schedule_without_begin_index_raises() -> None:
    # a compiled loop cannot read the first timestep without a break: it assumes the
    # schedule's start, and checks it on the device
    sch = _scheduler("diffusion", begin=False)

    def late(x: Any) -> Any:
        for t in sch.timesteps[2:]:
            x = sch.step(_model(sch.scale_model_input(x, t), t), t, x, return_dict=False)[0]
        return x

    with pytest.raises(RuntimeError, match="set_begin_index"):
        torch.compile(late, fullgraph=True, backend="aot_eager")(_x())
    sch = _scheduler("diffusion", begin=False)
    sch.set_begin_index(2)
    torch.compile(late, fullgraph=True, backend="aot_eager")(_x())  # the documented way


@pytest.mark.parametrize("kind", KINDS)
def test_the_levels_a_step_reads_are_python_floats(kind: str) -> None:
    # what an eager step reads per call: no array, so nothing a compiled loop must read back
    steps = _scheduler(kind).schedule.steps()
    assert len(steps) == STEPS
    assert all(type(v) is float for step in steps for v in step)


@pytest.mark.parametrize("kind", KINDS)
def test_a_loop_reading_prev_sample_compiles_whole(kind: str) -> None:
    # the output object (with its deferred x0) and a v-prediction model trace too
    config = {} if kind == "flow" else {"prediction_type": "v_prediction"}
    sch = _scheduler(kind, **config)

    def loop(x: Any) -> Any:
        for t in sch.timesteps:
            x = sch.step(_model(sch.scale_model_input(x, t), t), t, x).prev_sample
        return x

    explained = dynamo.explain(loop)(_x())
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
