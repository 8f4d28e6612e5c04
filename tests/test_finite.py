"""No NaN or inf, ever, for valid input: full loops over the whole config space and dtypes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kdpm2 import KDPM2AncestralDiscreteScheduler as Scheduler
from tests.strategies import config_and_steps

NUMPY_DTYPES = [np.float32, np.float64]


def _loop(sch, x, tanh, gen):
    for t in sch.timesteps:
        out = sch.step(tanh(sch.scale_model_input(x, t)), t, x, generator=gen)
        x = out.prev_sample
        assert out.pred_original_sample is not None
    return x


@given(config_and_steps(max_steps=25), st.sampled_from(NUMPY_DTYPES), st.integers(0, 2**16))
def test_numpy_loops_stay_finite(case, dtype, seed):
    """Every valid config, NumPy float32/float64: every sample of the loop is finite."""
    cfg, n = case
    sch = Scheduler(**cfg)
    sch.set_timesteps(n)
    rng = np.random.default_rng(seed)
    x = (float(sch.init_noise_sigma) * rng.standard_normal((2, 3))).astype(dtype)
    x = _loop(sch, x, np.tanh, rng)
    assert x.dtype == dtype
    assert np.isfinite(x).all()


@given(config_and_steps(max_steps=25), st.sampled_from(["float32", "float16", "bfloat16"]))
def test_torch_loops_stay_finite(case, dtype_name):
    """Every valid config, torch float32/float16/bfloat16: the loop stays finite.

    The only precondition is that the initial noise itself is representable in the dtype
    (float16 overflows at 65504, and squaredcos_cap_v2 starts near sigma 2e4).
    """
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    cfg, n = case
    sch = Scheduler(**cfg)
    sch.set_timesteps(n)
    assume(float(sch.init_noise_sigma) * 8 < torch.finfo(dtype).max)
    gen = torch.Generator().manual_seed(0)
    x = (float(sch.init_noise_sigma) * torch.randn(2, 3, generator=gen)).to(dtype)
    x = _loop(sch, x, torch.tanh, gen)
    assert x.dtype == dtype
    assert bool(torch.isfinite(x).all())


def _magnitudes():
    tiny_to_large = st.floats(-40.0, 0.0).map(lambda e: 10.0**e)
    return st.fixed_dictionaries(
        {"beta_start": tiny_to_large, "steps_offset": st.integers(0, 10**40)},
        optional={
            "beta_end": tiny_to_large,
            "trained_betas": st.lists(tiny_to_large, min_size=3, max_size=3),
            "use_karras_sigmas": st.booleans(),
            "use_exponential_sigmas": st.booleans(),
            "timestep_spacing": st.sampled_from(["linspace", "leading", "trailing"]),
        },
    )


@given(_magnitudes(), st.integers(1, 12))
def test_extreme_magnitudes_are_finite_or_rejected_at_the_boundary(cfg, n):
    """If this fails, a config with betas from 1e-40 to 1 or a huge steps_offset gives a NaN
    or inf schedule, or fails with something else than a clear ValueError where it is built."""
    cfg = {"num_train_timesteps": 3 if "trained_betas" in cfg else 1000, **cfg}
    if cfg.get("use_karras_sigmas") and cfg.get("use_exponential_sigmas"):
        cfg["use_exponential_sigmas"] = False
    try:
        sch = Scheduler(**cfg)
        sch.set_timesteps(n)
    except ValueError:
        return  # rejected at the boundary, with a message (docs/errors.md has examples)
    tables = sch.schedule
    for table in (tables.timesteps, tables.sigmas, tables.sigmas_mid, tables.sigmas_up,
                  tables.sigmas_down, tables.input_scales):  # fmt: skip
        assert np.isfinite(table).all(), (cfg, n, table)
    assert float(sch.init_noise_sigma) > 0
