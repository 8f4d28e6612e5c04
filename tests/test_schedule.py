"""Properties of the pure schedule tables, over the whole config space."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import assume, given

from kdpm2.schedule import (
    ancestral_split_table,
    make_schedule,
    make_train_schedule,
    train_schedule_from_config,
)
from tests.strategies import config_and_steps


def _valid(cfg, n):
    limit = cfg["num_train_timesteps"]
    if cfg["timestep_spacing"] != "linspace":
        assert n + cfg["discard_penultimate_sigma"] <= limit
    return make_schedule(cfg, n)


@given(config_and_steps())
def test_tables_are_finite_and_well_formed(case):
    """Every valid config gives finite tables of the documented lengths (no NaN anywhere)."""
    cfg, n = case
    s = _valid(cfg, n)
    assert s.num_inference_steps == n
    assert s.timesteps.shape == (2 * n - 1,)
    assert s.sigmas.shape == (n + 1,)
    for table in (s.timesteps, s.sigmas, s.sigmas_mid, s.sigmas_up, s.sigmas_down):
        assert np.isfinite(table).all()
    assert s.sigmas[-1] == 0.0
    assert np.isfinite(s.init_noise_sigma)
    assert s.init_noise_sigma > 0


@given(config_and_steps())
def test_ancestral_split_preserves_variance(case):
    """sigma_down**2 + sigma_up**2 == sigma_next**2 and 0 <= sigma_up <= sigma_next, every step."""
    cfg, n = case
    s = _valid(cfg, n)
    nxt = s.sigmas[1:]
    assert np.all(s.sigmas_up >= 0)
    assert np.all(s.sigmas_up <= nxt * (1 + 1e-6))
    assert np.all(s.sigmas_down >= 0)
    np.testing.assert_allclose(s.sigmas_down**2 + s.sigmas_up**2, nxt**2, rtol=1e-5, atol=1e-12)
    if cfg["eta"] == 0:
        assert np.all(s.sigmas_up == 0)


@given(config_and_steps(max_train=1200, max_steps=100))
def test_base_sigmas_decrease_strictly_when_steps_fit(case):
    """If this fails, a schedule with n <= T repeats or raises a noise level, so a step makes
    no progress (or goes backwards). Where alphas_cumprod underflows float32 (betas near 1 over
    many timesteps) the training sigmas are floored at one finite value (a documented
    difference from diffusers' inf), and steps through that floor repeat it; a steps_offset
    above 1 with leading spacing pushes timesteps past T - 1, where diffusers clamps them onto
    one level too: both excluded here."""
    cfg, n = case
    assume(n <= cfg["num_train_timesteps"] - 1 and cfg["num_train_timesteps"] >= 2)
    assume(cfg["timestep_spacing"] != "leading" or cfg["steps_offset"] <= 1)
    assume(np.all(np.diff(train_schedule_from_config(cfg).sigmas) > 0))
    s = _valid(cfg, n)
    assert np.all(np.diff(s.sigmas) < 0), s.sigmas


def test_squaredcos_small_n_is_finite():
    """squaredcos_cap_v2 at 2..10 steps: diffusers 0.42.1 gives NaN timesteps, kdpm2 must not.

    The float32 split cancels to a negative number under the square root; the exact
    sigma_down = sigma_next**2 / sigma (eta = 1) is used instead.
    """
    for n in range(1, 11):
        s = make_schedule({"beta_schedule": "squaredcos_cap_v2"}, n)
        assert np.isfinite(s.timesteps).all()
        assert np.all(s.sigmas_mid[:-1] > 0)
    s = make_schedule({"beta_schedule": "squaredcos_cap_v2"}, 2)
    expected = s.sigmas[1] ** 2 / s.sigmas[0]
    assert s.sigmas_down[0] == pytest.approx(expected, rel=1e-12)


def test_ancestral_split_eta_zero_and_exact_fallback():
    """eta=0 gives (sigma_next, 0); an ill-conditioned float32 split falls back to float64."""
    down, up = ancestral_split_table(np.array([2.0, 1e4]), np.array([1.0, 1.0]), eta=0.0)
    assert down.tolist() == [1.0, 1.0]
    assert up.tolist() == [0.0, 0.0]
    down, up = ancestral_split_table(np.array([1e4]), np.array([1.0]))
    assert down[0] == pytest.approx(1e-4, rel=1e-9)


def test_discard_penultimate_sigma_drops_exactly_one_sigma():
    """The option builds N+1 sigmas and drops the next-to-last one; nothing else changes."""
    full = make_schedule({"use_karras_sigmas": True}, 6)
    cut = make_schedule({"use_karras_sigmas": True, "discard_penultimate_sigma": True}, 5)
    np.testing.assert_array_equal(cut.sigmas, np.concatenate([full.sigmas[:-2], [0.0]]))
    np.testing.assert_array_equal(cut.timesteps[0::2], full.timesteps[0::2][:-1])


def test_linear_betas_match_torch_linspace():
    """If this fails, the betas (the root of every other table) are not torch.linspace's float32
    values, as diffusers builds them. Within 1 ulp, not bit for bit: torch's vectorised kernels
    round start + step * i once (kdpm2 mirrors them), its portable kernels twice."""
    torch = pytest.importorskip("torch")
    for n in (1, 2, 17, 1000, 1100, 4096):
        ours = make_train_schedule(num_train_timesteps=n).betas.astype(np.float32)
        ref = torch.linspace(0.00085, 0.012, n, dtype=torch.float32).numpy()
        np.testing.assert_array_max_ulp(ours, ref, maxulp=1)


def test_alphas_cumprod_match_torch_cumprod():
    """If this fails, alphas_cumprod does not accumulate as torch.cumprod of float32 alphas does
    (in float64, each partial product rounded to float32): float32 accumulation drifts by
    several ulps over 1000 terms. The same alphas go into both, so only the cumprod is tested."""
    torch = pytest.importorskip("torch")
    for schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        ts = make_train_schedule(beta_schedule=schedule, num_train_timesteps=4096)
        alphas = 1 - torch.from_numpy(ts.betas.astype(np.float32))
        ref = torch.cumprod(alphas, 0).numpy()
        np.testing.assert_array_max_ulp(ts.alphas_cumprod.astype(np.float32), ref, maxulp=1)


def test_tables_are_read_only():
    """Schedules are immutable: nothing can change a table after it is built, or in a copy."""
    s = make_schedule({}, 5)
    for table in (s, copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        with pytest.raises(ValueError, match="read-only"):
            table.sigmas[0] = 1.0
        np.testing.assert_array_equal(table.timesteps, s.timesteps)


def test_discard_penultimate_sigma_holds_on_the_functional_path():
    """The sigma builders drop the same sigma the scheduler's option drops."""
    import kdpm2

    full = kdpm2.get_sigmas_karras(8, 0.03, 14.6)
    cut = kdpm2.get_sigmas_karras(7, 0.03, 14.6, discard_penultimate_sigma=True)
    np.testing.assert_array_equal(cut, np.concatenate([full[:-2], [0.0]]))
    full = kdpm2.get_sigmas_exponential(5, 0.1, 10.0)
    cut = kdpm2.get_sigmas_exponential(4, 0.1, 10.0, discard_penultimate_sigma=True)
    np.testing.assert_array_equal(cut, np.concatenate([full[:-2], [0.0]]))
    cfg = {"use_karras_sigmas": True}
    full = kdpm2.get_sigmas_from_config(cfg, 8)
    cut = kdpm2.get_sigmas_from_config({**cfg, "discard_penultimate_sigma": True}, 7)
    np.testing.assert_array_equal(cut, np.concatenate([full[:-2], [0.0]]))
