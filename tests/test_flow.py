"""DPM2 ancestral for rectified-flow models: the functional sampler, the pure step, the scheduler.

The functional sampler is checked against an independent float64 transcription of the step
formulas; the scheduler against the functional sampler; both against an exact Gaussian
denoiser (convergence order at eta = 0, the data's moments at eta = 1).
"""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest

import kdpm2
from kdpm2 import _math
from kdpm2.flow import FlowConfig, FlowMatchKDPM2AncestralDiscreteScheduler, make_flow_schedule

FlowScheduler = FlowMatchKDPM2AncestralDiscreteScheduler  # kdpm2's own class (no diffusers)


def reference_sampler(model, x, sigmas, eta, s_noise, noises):
    """The step formulas as written (textbook renoise), float64, one Python float at a time."""
    x = np.array(x, dtype=np.float64)
    drawn = iter(noises)
    for s, s_next in itertools.pairwise(sigmas):
        s, s_next = float(s), float(s_next)
        d = (x - model(x, s)) / s
        sigma_down = s_next * (1 + (s_next / s - 1) * eta)
        alpha_next, alpha_down = 1 - s_next, 1 - sigma_down
        if sigma_down == 0:
            x = x + d * (sigma_down - s)
            continue
        renoise = math.sqrt(max(s_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2, 0.0))
        sigma_mid = math.exp((math.log(s) + math.log(sigma_down)) / 2)
        x_2 = x + d * (sigma_mid - s)
        d_2 = (x_2 - model(x_2, sigma_mid)) / sigma_mid
        x = x + d_2 * (sigma_down - s)
        x = (alpha_next / alpha_down) * x + next(drawn) * s_noise * renoise
    return x


def toy_denoiser(x, s):
    """A smooth nonlinear denoiser: any test model will do, as long as it is not linear."""
    s = np.asarray(s, dtype=np.float64)
    s = s.reshape(-1, *[1] * (x.ndim - 1)) if s.ndim else s
    return np.tanh(x) * (1 - s) + 0.1 * x * s


class Recorded:
    """A noise sampler that draws from a seeded generator and remembers what it gave."""

    def __init__(self, shape, seed=0):
        self.rng, self.shape, self.draws = np.random.default_rng(seed), shape, []

    def __call__(self, sigma, sigma_next):
        self.draws.append(self.rng.standard_normal(self.shape))
        return self.draws[-1]


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("s_noise", [1.0, 0.7])
def test_functional_sampler_matches_the_formulas(eta, s_noise):
    """If this fails, sample_dpm_2_ancestral_rf does not take the flow DPM2-ancestral step as
    written out in the test (midpoint solve to sigma_down, rescale, renoise) for this eta and
    s_noise."""
    x = np.random.default_rng(1).standard_normal((3, 5))
    sigmas = np.append(np.linspace(1.0, 0.05, 9), 0.0)
    noise = Recorded(x.shape)
    out = kdpm2.sample_dpm_2_ancestral_rf(
        toy_denoiser, x, sigmas, eta=eta, s_noise=s_noise, noise_sampler=noise, disable=True
    )
    assert len(noise.draws) == 8  # 9 steps: all but the last (Euler) one draw, as ComfyUI's
    ref = reference_sampler(toy_denoiser, x, sigmas, eta, s_noise, noise.draws)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_functional_sampler_on_tensors_matches_numpy():
    """If this fails, the flow sampler gives other numbers on torch tensors than on NumPy arrays
    for the same inputs and noise."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal((2, 4))
    sigmas = np.linspace(1.0, 0.0, 7)
    noise = Recorded(x.shape)
    ref = kdpm2.sample_dpm_2_ancestral_rf(toy_denoiser, x, sigmas, noise_sampler=noise)
    draws = iter(noise.draws)

    def model(xt, s):
        return torch.from_numpy(toy_denoiser(xt.numpy(), s.numpy()))

    out = kdpm2.sample_dpm_2_ancestral_rf(
        model,
        torch.from_numpy(x),
        torch.from_numpy(sigmas),
        noise_sampler=lambda a, b: torch.from_numpy(next(draws)),
    )
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_per_sample_sigmas_equal_one_run_per_sample():
    """If this fails, a batch with one flow schedule per sample (sigmas of shape (n + 1, B)) is
    not the same as running each sample alone with its own column."""
    x = np.random.default_rng(3).standard_normal((2, 3))
    columns = [np.linspace(1.0, 0.0, 6), np.append(np.linspace(0.8, 0.1, 5), 0.0)]
    sigmas = np.stack(columns, axis=1)
    out = kdpm2.sample_dpm_2_ancestral_rf(toy_denoiser, x, sigmas, eta=0.0)
    for b, column in enumerate(columns):
        one = kdpm2.sample_dpm_2_ancestral_rf(toy_denoiser, x[b : b + 1], column, eta=0.0)
        np.testing.assert_allclose(out[b], one[0], rtol=1e-12, atol=1e-12)


def test_flow_split_keeps_the_marginal_and_is_exact_at_eta_0():
    """If this fails, the flow ancestral split does not restore the marginal at sigma_next
    ((sigma_down * scale)**2 + renoise**2 == sigma_next**2), or eta = 0 is not the plain
    deterministic step (sigma_down == sigma_next, no noise, scale 1)."""
    s = np.linspace(1.0, 0.01, 50)
    s_next = s * 0.83
    for eta in (0.3, 1.0):
        down, renoise, scale = _math.flow_ancestral_split(s, s_next, eta)
        # the noise level after the rescale and the fresh noise is s_next again
        np.testing.assert_allclose((down * scale) ** 2 + renoise**2, s_next**2, rtol=1e-12)
        # ... and so is the signal level: (1 - down) * scale == 1 - s_next
        np.testing.assert_allclose((1 - down) * scale, 1 - s_next, rtol=1e-12)
    f32 = s.astype(np.float32)
    down, renoise, scale = _math.flow_ancestral_split(f32, f32 * np.float32(0.83), 0.0)
    assert (renoise == 0).all()
    assert (scale == 1).all()
    assert renoise.dtype == np.float32


def test_flow_split_at_the_edges_is_finite():
    """If this fails, the split at s = 1 or at the last step (to 0) gives NaN or a step where
    there is none."""
    assert _math.flow_ancestral_split(1.0, 1.0, 1.0) == (1.0, 0.0, 1.0)  # no step at s = 1
    assert _math.flow_ancestral_split(0.5, 0.0, 1.0) == (0.0, 0.0, 1.0)  # the last step
    assert _math.flow_ancestral_split(0.0, 0.0, 1.0) == (0.0, 0.0, 1.0)


def test_public_step_checks_flow_noise_levels():
    """If this fails, the public flow step accepts noise levels outside [0, 1] or a step that
    goes up, instead of a ValueError that says what a flow level is."""
    x = np.ones((1, 2))
    with pytest.raises(ValueError, match="<= 1"):
        kdpm2.flow_dpm2_ancestral_step(x, x, lambda a, s: a, 1.5, 0.5, None)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        kdpm2.sample_dpm_2_ancestral_rf(toy_denoiser, x, [2.0, 1.0, 0.0])


# ----------------------------------------------------------------- an exact Gaussian denoiser
MEAN, STD = 0.7, 0.5  # the data: x0 ~ N(MEAN, STD**2) in every coordinate


def gaussian_denoiser(x, s):
    """E[x0 | x_s] for x_s = (1 - s) x0 + s n: exact for the Gaussian data above."""
    s = np.asarray(s, dtype=np.float64)
    s = s.reshape(-1, *[1] * (x.ndim - 1)) if s.ndim else s
    a = 1 - s
    return MEAN + a * STD**2 / (a**2 * STD**2 + s**2) * (x - a * MEAN)


def test_order_of_convergence_at_eta_0():
    """If this fails, the deterministic flow sampler is no longer second order on exactly
    Gaussian data (its midpoint step is wrong)."""
    x = np.random.default_rng(4).standard_normal((64, 1))
    sigmas = lambda n: np.linspace(1.0, 0.0, n + 1)  # noqa: E731
    exact = kdpm2.sample_dpm_2_ancestral_rf(gaussian_denoiser, x, sigmas(4096), eta=0.0)
    errors = [
        np.abs(
            kdpm2.sample_dpm_2_ancestral_rf(gaussian_denoiser, x, sigmas(n), eta=0.0) - exact
        ).max()
        for n in (8, 16, 32, 64)
    ]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert (orders >= 1.6).all(), orders


def test_eta_1_samples_the_data_distribution():
    """If this fails, the ancestral flow sampler at eta = 1 does not reproduce the data
    distribution's moments (wrong renoise or rescale)."""
    n = 40_000
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, 1))
    out = kdpm2.sample_dpm_2_ancestral_rf(
        gaussian_denoiser,
        x,
        np.linspace(1.0, 0.0, 31),
        noise_sampler=lambda a, b: rng.standard_normal((n, 1)),
    )
    # standard errors of the sample mean and variance of n normal draws
    assert abs(out.mean() - MEAN) < 4 * STD / math.sqrt(n)
    assert abs(out.var() - STD**2) < 4 * STD**2 * math.sqrt(2 / n) + 2e-3  # + discretisation


# ------------------------------------------------------------------------------ scheduler
def run_scheduler(sch, x, denoiser, generator=None):
    """A pipeline-style loop with a model that knows each call's exact (float64) noise level.

    (A network reads the float32 timestep instead; the test wants the scheduler's arithmetic.)
    """
    for k, t in enumerate(sch.timesteps):
        s = sch.schedule.call_sigmas[k]
        v = (x - denoiser(x, s)) / s
        x = sch.step(v, t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_scheduler_equals_the_functional_sampler(eta):
    """If this fails, the flow scheduler's two calls per step do not give the functional
    sampler's numbers for the same schedule and noise."""
    sch = FlowScheduler(shift=3.0, eta=eta)
    sch.set_timesteps(8)
    x = np.random.default_rng(6).standard_normal((2, 3))
    out = run_scheduler(sch, x, toy_denoiser, generator=np.random.default_rng(7))
    sigmas = sch.schedule.sigmas
    rng = np.random.default_rng(7)
    ref = kdpm2.sample_dpm_2_ancestral_rf(
        toy_denoiser, x, sigmas, eta=eta, noise_sampler=lambda a, b: rng.standard_normal(x.shape)
    )
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_scheduler_timesteps_interleave_midpoints_and_repeat_at_eta_1():
    """If this fails, the flow scheduler's timesteps are not [t_0, m_0, t_1, m_1, ..., t_last]
    (2N - 1 model calls), or at eta = 1 a midpoint is not the next step's level."""
    sch = FlowScheduler()
    sch.set_timesteps(5)
    ts = np.asarray(sch.timesteps)
    assert len(ts) == 2 * 5 - 1
    assert sch.order == 2
    # at eta = 1 the midpoint's level is the next step's
    np.testing.assert_array_equal(ts[1::2], ts[2::2])
    s = sch.schedule.sigmas
    np.testing.assert_allclose(ts[0::2], s[:-1] * 1000, rtol=1e-6)


def test_scheduler_runs_with_repeated_timesteps_from_values():
    """If this fails, a loop that passes timestep values (not views of scheduler.timesteps)
    loses its place when a midpoint's timestep equals the next step's."""
    # a loop that passes timestep values (not views of scheduler.timesteps) still steps in order
    sch = FlowScheduler()
    sch.set_timesteps(4)
    ref = FlowScheduler()
    ref.set_timesteps(4)
    x = np.random.default_rng(8).standard_normal((1, 2))
    a, b = x, x
    for t in sch.timesteps:
        v = np.tanh(a)
        a = sch.step(v, float(t), a, generator=np.random.default_rng(0)).prev_sample
        b = ref.step(np.tanh(b), t, b, generator=np.random.default_rng(0)).prev_sample
    np.testing.assert_array_equal(a, b)


def test_renoise_is_exactly_zero_at_eta_0_and_finite_otherwise():
    """If this fails, eta = 0 still adds noise (the renoise std is not exactly 0), or the
    renoise of an ordinary schedule is not finite."""
    sch = FlowScheduler(eta=0.0, shift=3.0)
    sch.set_timesteps(50)
    assert (sch.schedule.renoise == 0).all()
    sch = FlowScheduler(shift=3.0)
    sch.set_timesteps(50)
    assert np.isfinite(sch.schedule.renoise).all()
    assert (sch.schedule.renoise[:-1] > 0).all()


def test_float32_state_and_model_dtype_output():
    """If this fails, a low-precision model output makes the flow scheduler keep its state in
    that precision, or it returns another dtype than the model output's."""
    torch = pytest.importorskip("torch")
    sch = FlowScheduler()
    sch.set_timesteps(3)
    x = torch.randn(1, 4, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    for t in sch.timesteps:
        out = sch.step(torch.tanh(x), t, x, generator=g).prev_sample
        assert out.dtype == torch.bfloat16
        if sch.sample is not None:
            assert sch.sample.dtype == torch.float32
        x = out
    assert torch.isfinite(x.float()).all()


def test_numpy_float32_keeps_float32():
    """If this fails, NumPy float32 inputs come back as float64 from the flow scheduler."""
    sch = FlowScheduler()
    sch.set_timesteps(3)
    x = np.ones((1, 2), np.float32)
    out = sch.step(x, sch.timesteps[0], x).prev_sample
    assert out.dtype == np.float32


def test_scale_noise_maps_interleaved_indices_to_noise_levels():
    """If this fails, scale_noise noises to another level than the model call the loop is at
    (a step start's or a midpoint's)."""
    sch = FlowScheduler(shift=3.0)
    sch.set_timesteps(6)
    sample, noise = np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32)
    ts = sch.timesteps
    # img2img: begin index 2 * k, before the first step: the level of step k
    sch.set_begin_index(4)
    level = sch.scale_noise(sample, ts[4:5], noise)
    assert level.item() == pytest.approx(sch.schedule.sigmas[2], rel=1e-6)
    # inpaint, after a first half: the midpoint's level, the noise level of the sample now
    x = np.zeros((1, 1), np.float32)
    x = sch.step(x, ts[4], x).prev_sample
    level = sch.scale_noise(sample, ts[5:6], noise)
    assert level.item() == pytest.approx(sch.schedule.sigmas_mid[2], rel=1e-6)
    # without a begin index: looked up by value, at a step start
    fresh = FlowScheduler(shift=3.0)
    fresh.set_timesteps(6)
    level = fresh.scale_noise(sample, np.asarray(ts[2:3]), noise)
    assert level.item() == pytest.approx(fresh.schedule.sigmas[1], rel=1e-6)


def test_img2img_start_at_a_begin_index_matches_the_full_loop_tail():
    """If this fails, a loop started with set_begin_index (img2img) does not continue as the full
    loop would from that step."""
    sch = FlowScheduler(eta=0.0)
    sch.set_timesteps(6)
    full = FlowScheduler(eta=0.0)
    full.set_timesteps(6)
    x = np.random.default_rng(9).standard_normal((1, 3))
    # run the full loop; record the sample at step 2's start
    y, at_step_2 = x, None
    for k, t in enumerate(full.timesteps):
        if k == 4:
            at_step_2 = y
        y = full.step(np.tanh(y), t, y).prev_sample
    sch.set_begin_index(4)
    z = at_step_2
    for t in sch.timesteps[4:]:
        z = sch.step(np.tanh(z), t, z).prev_sample
    np.testing.assert_array_equal(y, z)


@pytest.mark.parametrize(
    ("config", "call", "error", "match"),
    [
        ({"use_dynamic_shifting": True}, {"num_inference_steps": 4}, ValueError, "mu is required"),
        ({"use_dynamic_shifting": True}, {"mu": 0.5}, ValueError, "needs num_inference_steps"),
        (
            {"use_dynamic_shifting": True},
            {"num_inference_steps": 3, "sigmas": [1.0, 0.5], "mu": 0.5},
            ValueError,
            "disagree",
        ),
        ({}, {"sigmas": [0.5, 1.0]}, ValueError, "increases"),
        ({}, {"sigmas": [1.0, 0.0]}, ValueError, r"in \(0, 1\]"),
        ({}, {"num_inference_steps": 2.5}, TypeError, "num_inference_steps"),
    ],
    ids=["no-mu", "mu-without-steps", "sigmas-and-steps-disagree", "increasing", "zero", "float"],
)
def test_set_timesteps_rejects_bad_arguments_with_a_clear_error(config, call, error, match):
    """If this fails, a bad set_timesteps call is accepted, or raises another exception type or
    a message that does not name the problem."""
    with pytest.raises(error, match=match):
        FlowScheduler(**config).set_timesteps(**call)


@pytest.mark.parametrize(
    ("config", "match"),
    [({"shift": 0}, "shift=0"), ({"time_shift_type": "cubic"}, "time_shift_type")],
)
def test_constructor_rejects_bad_config_values(config, match):
    """If this fails, an invalid flow config is accepted at construction (to fail later)."""
    with pytest.raises(ValueError, match=match):
        FlowScheduler(**config)


def test_step_after_the_last_timestep_raises_index_error():
    """If this fails, a loop that runs past its schedule steps on (with stale levels) instead
    of telling the user to call set_timesteps again."""
    done = FlowScheduler()
    done.set_timesteps(1)
    x = np.ones((1, 2))
    done.step(x, done.timesteps[0], x)
    with pytest.raises(IndexError, match="after the last timestep"):
        done.step(x, done.timesteps[0], x)


def test_no_nan_for_any_respacing_and_small_n():
    """If this fails, some flow respacing at 1 to 10 steps gives a NaN or inf level or timestep."""
    for extra in ({}, {"use_karras_sigmas": True}, {"use_exponential_sigmas": True}):
        for n in (1, 2, 3, 10):
            sch = FlowScheduler(shift=3.0, shift_terminal=0.05, **extra)
            sch.set_timesteps(n)
            tab = sch.schedule
            tables = [tab.sigmas_mid, tab.sigmas_down, tab.renoise, tab.scales, tab.timesteps]
            assert all(np.isfinite(t).all() for t in tables)


def test_invert_sigmas_flips_what_the_model_sees_not_the_result():
    """If this fails, invert_sigmas changes the sampled result rather than only the timesteps
    the model sees and the sign of its velocity."""
    x = np.random.default_rng(10).standard_normal((1, 3))
    plain, inverted = FlowScheduler(eta=0.0), FlowScheduler(eta=0.0, invert_sigmas=True)
    plain.set_timesteps(5)
    inverted.set_timesteps(5)
    np.testing.assert_allclose(
        np.asarray(inverted.timesteps), 1000 - np.asarray(plain.timesteps), atol=1e-3
    )
    a = b = x
    for t_plain, t_inv in zip(plain.timesteps, inverted.timesteps, strict=True):
        a = plain.step(np.tanh(a), t_plain, a).prev_sample
        b = inverted.step(-np.tanh(b), t_inv, b).prev_sample  # its model's velocity is negated
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_deepcopy_and_pickle_mid_loop():
    """If this fails, a flow scheduler pickled between the two halves of a step loses the kept
    sample, so the copy continues differently."""
    sch = FlowScheduler()
    sch.set_timesteps(3)
    x = np.ones((1, 2))
    x = sch.step(x * 0.1, sch.timesteps[0], x).prev_sample
    copy = pickle.loads(pickle.dumps(sch))
    t = sch.timesteps[1]
    a = sch.step(x, t, x, generator=np.random.default_rng(0)).prev_sample
    b = copy.step(x, t, x, generator=np.random.default_rng(0)).prev_sample
    np.testing.assert_array_equal(a, b)


def test_schedule_example_table():
    """If this fails, the flow step levels are wrong: at eta = 0 step 1 -> 0.5 goes to
    sigma_down = 0.5 through the log midpoint sqrt(0.5), and the last step is Euler to 0."""
    sch = make_flow_schedule(FlowConfig(eta=0.0), np.array([1.0, 0.5], np.float32))
    assert sch.sigmas.tolist() == [1.0, 0.5, 0.0]
    assert sch.sigmas_mid.tolist() == pytest.approx([math.sqrt(0.5), 0.0])
    assert sch.sigmas_down.tolist() == [0.5, 0.0]
    assert sch.call_sigmas.tolist() == pytest.approx([1.0, math.sqrt(0.5), 0.5])
    assert (sch.renoise.tolist(), sch.scales.tolist()) == ([0.0, 0.0], [1.0, 1.0])
