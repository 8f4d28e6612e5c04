"""Random garbage at every public entry point: only the documented exceptions, no state change.

Each public function and method gets, in one argument at a time, values of the wrong type,
NaN and inf, huge and negative numbers, empty and wrongly shaped arrays. A call may succeed
(garbage that happens to be valid) or raise TypeError or ValueError (TimestepNotInScheduleError
is a ValueError); anything else (AttributeError, IndexError from deep inside, a NumPy or torch
error) means some input reaches the arithmetic unchecked. A scheduler's loop state must be the
same after a rejected call.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdpm2
import kdpm2.scheduler

ACCEPTED = (TypeError, ValueError)
# huge but finite values are valid and may overflow in the arithmetic (sigma**2 = inf, an inf
# noise scale times a zero draw = NaN): not a missed check; finiteness for usable inputs is
# what tests/test_finite.py checks
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(
        [
            np.array([]),
            np.zeros((0, 2), np.float32),
            np.ones((3, 5), np.float32),
            np.ones((2, 2), np.int32),
            np.array([np.nan, 1.0]),
            np.array(["a", "b"]),
            np.float32(np.inf),
            object(),
            [[1.0], [1.0, 2.0]],
        ]
    ),
)

X = np.ones((2, 2), np.float32)


def _denoiser(x, sigma):
    return x * 0


def _state(sch):
    return (sch.step_index, sch.begin_index, sch.sample is None, sch.num_inference_steps)


# a scheduler is built per example; the profile sets how many examples
GARBAGE_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _call(fn):
    with contextlib.suppress(*ACCEPTED):
        fn()


@GARBAGE_SETTINGS
@given(
    value=garbage,
    where=st.sampled_from(
        [
            "scale.sample",
            "scale.timestep",
            "step.model_output",
            "step.timestep",
            "step.sample",
            "step.generator",
            "add_noise.original",
            "add_noise.noise",
            "add_noise.timesteps",
            "set_timesteps",
            "set_begin_index",
        ]
    ),
    cls=st.sampled_from(["public", "own"]),
)
def test_scheduler_methods(value, where, cls):
    """Scheduler methods reject garbage with TypeError/ValueError and keep their state."""
    Scheduler = (
        kdpm2.KDPM2AncestralDiscreteScheduler
        if cls == "public"
        else kdpm2.scheduler.KDPM2AncestralDiscreteScheduler
    )
    sch = Scheduler()
    sch.set_timesteps(3)
    t = float(np.asarray(sch.timesteps)[0])
    sch.step(X, t, X, generator=np.random.default_rng(0))  # mid step: a sample is kept
    before = _state(sch)
    method, _, arg = where.partition(".")
    args = {
        "scale": lambda v: sch.scale_model_input(*{"sample": (v, t), "timestep": (X, v)}[arg]),
        "step": lambda v: sch.step(
            **{
                "model_output": X,
                "timestep": t,
                "sample": X,
                "generator": np.random.default_rng(1),
                arg: v,
            }
        ),
        "add_noise": lambda v: sch.add_noise(
            *{
                "original": (v, X, np.array([t])),
                "noise": (X, v, np.array([t])),
                "timesteps": (X, X, v),
            }[arg]
        ),
        "set_timesteps": lambda v: sch.set_timesteps(v),
        "set_begin_index": lambda v: sch.set_begin_index(v),
    }[method]
    try:
        args(value)
    except ACCEPTED:
        assert _state(sch) == before
    # the timestep only matters at a loop's start; later calls ignore it, as in diffusers


@GARBAGE_SETTINGS
@given(
    value=garbage,
    key=st.sampled_from(
        [
            "num_train_timesteps",
            "beta_start",
            "beta_end",
            "beta_schedule",
            "trained_betas",
            "use_karras_sigmas",
            "prediction_type",
            "timestep_spacing",
            "steps_offset",
            "eta",
            "s_noise",
            "discard_penultimate_sigma",
        ]
    ),
)
def test_constructor(value, key):
    """Every constructor argument is checked: garbage gives TypeError or ValueError."""
    _call(lambda: kdpm2.scheduler.KDPM2AncestralDiscreteScheduler(**{key: value}))


@GARBAGE_SETTINGS
@given(
    value=garbage,
    where=st.sampled_from(
        [
            "sample.model",
            "sample.x",
            "sample.sigmas",
            "sample.eta",
            "sample.s_noise",
            "sample.extra_args",
            "sample.noise_sampler",
            "karras.n",
            "karras.sigma_min",
            "karras.sigma_max",
            "karras.rho",
            "exponential.sigma_max",
            "from_config.config",
            "from_config.n",
            "denoiser.network",
            "denoiser.config",
            "step.x",
            "step.denoised",
            "step.denoised_mid_fn",
            "step.sigma",
            "step.sigma_next",
            "step.noise",
            "step.eta",
        ]
    ),
)
def test_functional_entry_points(value, where):
    """The k-diffusion side rejects garbage with TypeError or ValueError only."""
    fn, _, arg = where.partition(".")
    sig = kdpm2.get_sigmas_karras(2, 0.1, 10.0)
    calls = {
        "sample": lambda: kdpm2.sample_dpm_2_ancestral(
            **{
                "model": _denoiser,
                "x": X,
                "sigmas": sig,
                "disable": True,
                "noise_sampler": lambda a, b: np.zeros_like(X),
                arg: value,
            }
        ),
        "karras": lambda: kdpm2.get_sigmas_karras(
            **{"n": 3, "sigma_min": 0.1, "sigma_max": 10.0, arg: value}
        ),
        "exponential": lambda: kdpm2.get_sigmas_exponential(
            **{"n": 3, "sigma_min": 0.1, "sigma_max": 10.0, arg: value}
        ),
        "from_config": lambda: kdpm2.get_sigmas_from_config(**{"config": {}, "n": 3, arg: value}),
        "step": lambda: kdpm2.dpm2_ancestral_step(
            **{
                "x": X,
                "denoised": X * 0,
                "denoised_mid_fn": _denoiser,
                "sigma": 1.0,
                "sigma_next": 0.5,
                "noise": X * 0,
                arg: value,
            }
        ),
        "denoiser": lambda: kdpm2.denoiser_from_network(
            **{"network": lambda x, t: x, "config": {}, arg: value}
        )(X, np.ones(2)),
    }
    _call(calls[fn])


def test_garbage_that_reaches_the_arithmetic_is_caught():
    """The test above can fail: a raw error from inside (here an AttributeError) escapes it."""
    with pytest.raises(AttributeError):
        _call(lambda: None.shape)  # type: ignore[attr-defined]


@GARBAGE_SETTINGS
@given(
    value=garbage,
    where=st.sampled_from(
        [
            "scale.sample",
            "step.model_output",
            "step.timestep",
            "step.sample",
            "step.generator",
            "scale_noise.sample",
            "scale_noise.timestep",
            "scale_noise.noise",
            "set_timesteps.num_inference_steps",
            "set_timesteps.sigmas",
            "set_timesteps.mu",
            "set_timesteps.timesteps",
            "set_begin_index",
            "set_shift",
        ]
    ),
    cls=st.sampled_from(["public", "own"]),
)
def test_flow_scheduler_methods(value, where, cls):
    """The flow scheduler's methods reject garbage with TypeError/ValueError, state kept."""
    import kdpm2.flow

    Scheduler = (
        kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler
        if cls == "public"
        else kdpm2.flow.FlowMatchKDPM2AncestralDiscreteScheduler
    )
    sch = Scheduler(use_dynamic_shifting=where == "set_timesteps.mu")
    sch.set_timesteps(3, mu=0.5)
    t = float(np.asarray(sch.timesteps)[0])
    sch.step(X, t, X, generator=np.random.default_rng(0))  # mid step: a sample is kept
    before = _state(sch)
    method, _, arg = where.partition(".")
    calls = {
        "scale": lambda v: sch.scale_model_input(v, t),
        "step": lambda v: sch.step(
            **{
                "model_output": X,
                "timestep": t,
                "sample": X,
                "generator": np.random.default_rng(1),
                arg: v,
            }
        ),
        "scale_noise": lambda v: sch.scale_noise(
            **{"sample": X, "timestep": np.array([t]), "noise": X, arg: v}
        ),
        "set_timesteps": lambda v: sch.set_timesteps(**{"mu": 0.5, arg: v}),
        "set_begin_index": lambda v: sch.set_begin_index(v),
        "set_shift": lambda v: sch.set_shift(v),
    }
    try:
        calls[method](value)
    except ACCEPTED:
        assert _state(sch) == before


@GARBAGE_SETTINGS
@given(
    value=garbage,
    key=st.sampled_from(
        [
            "num_train_timesteps",
            "shift",
            "use_dynamic_shifting",
            "base_shift",
            "max_shift",
            "base_image_seq_len",
            "max_image_seq_len",
            "invert_sigmas",
            "shift_terminal",
            "use_karras_sigmas",
            "time_shift_type",
            "eta",
            "s_noise",
        ]
    ),
)
def test_flow_constructor(value, key):
    """Every flow constructor argument is checked: garbage gives TypeError or ValueError."""
    import kdpm2.flow

    _call(lambda: kdpm2.flow.FlowMatchKDPM2AncestralDiscreteScheduler(**{key: value}))


@GARBAGE_SETTINGS
@given(
    value=garbage,
    where=st.sampled_from(["model", "x", "sigmas", "eta", "s_noise", "noise_sampler", "callback"]),
)
def test_flow_functional_sampler(value, where):
    """sample_dpm_2_ancestral_rf rejects garbage with TypeError or ValueError only."""
    _call(
        lambda: kdpm2.sample_dpm_2_ancestral_rf(
            **{
                "model": _denoiser,
                "x": X,
                "sigmas": np.array([1.0, 0.5, 0.0]),
                "disable": True,
                "noise_sampler": lambda a, b: np.zeros_like(X),
                where: value,
            }
        )
    )
