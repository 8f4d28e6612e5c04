"""The pure step math (kdpm2._math): each function against its formula, on both backends."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdpm2 import _math

sigma_pairs = st.tuples(
    st.floats(1e-3, 1e3), st.floats(0.0, 1.0), st.sampled_from([0.0, 0.3, 1.0])
).map(lambda t: (t[0], t[0] * t[1], t[2]))


@given(sigma_pairs)
def test_ancestral_split_restores_the_marginal(pair):
    """sigma_down**2 + sigma_up**2 == sigma_next**2 and 0 <= sigma_up <= sigma_next; eta = 0
    is no noise. A wrong formula breaks the variance the next step expects."""
    sigma, sigma_next, eta = pair
    down, up = _math.ancestral_split(sigma, sigma_next, eta)
    assert down**2 + up**2 == pytest.approx(sigma_next**2, rel=1e-12, abs=1e-300)
    assert 0.0 <= up <= sigma_next
    if eta == 0:
        assert (down, up) == (sigma_next, 0.0)


def test_ancestral_split_floats_and_arrays_agree_and_keep_the_dtype():
    """One body serves Python floats and arrays: the same float64 numbers, and float32 arrays
    are computed in float32 (k-diffusion computes the split in the sigmas' dtype)."""
    sigma = np.array([10.0, 2.0, 0.5, 0.0])
    nxt = np.array([2.0, 0.5, 0.0, 0.0])
    down, up = _math.ancestral_split(sigma, nxt, 0.7)
    for i in range(4):
        assert (down[i], up[i]) == _math.ancestral_split(float(sigma[i]), float(nxt[i]), 0.7)
    assert (down[3], up[3]) == (0.0, 0.0)  # sigma == 0: nothing to split, and no NaN
    down32, up32 = _math.ancestral_split(sigma.astype(np.float32), nxt.astype(np.float32), 0.7)
    assert down32.dtype == up32.dtype == np.float32


def test_log_midpoint_is_the_geometric_mean_and_zero_at_the_end():
    """exp((log a + log b) / 2) == sqrt(a * b); 0 where sigma_down is 0, without a warning."""
    assert _math.log_midpoint(9.0, 4.0) == pytest.approx(6.0, rel=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mid = _math.log_midpoint(np.array([9.0, 3.0]), np.array([4.0, 0.0]))
    np.testing.assert_allclose(mid, [6.0, 0.0], rtol=1e-15)


def test_to_d_broadcasts_one_sigma_per_sample():
    """(x - denoised) / sigma with sigma of shape (B,) divides each sample by its own."""
    x = np.ones((2, 3))
    d = _math.to_d(x, np.array([1.0, 4.0]), np.zeros((2, 3)))
    np.testing.assert_array_equal(d, [[1.0] * 3, [0.25] * 3])


def test_add_scaled_is_x_plus_y_times_a_and_leaves_its_inputs_alone():
    """The NumPy path (in place into its own temporary) gives x + y * a bit for bit, in the
    promoted dtype when the dtypes differ, and modifies neither input."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 5)).astype(np.float32), rng.standard_normal((2, 5))
    for y_ in (y.astype(np.float32), y):
        x_before, y_before = x.copy(), y_.copy()
        out = _math.add_scaled(x, y_, 0.37)
        expected = x + y_ * 0.37
        assert out.dtype == expected.dtype
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(x, x_before)
        np.testing.assert_array_equal(y_, y_before)
    per_sample = _math.add_scaled(x, x, np.array([1.0, 0.0]))
    np.testing.assert_array_equal(per_sample, np.stack([2 * x[0], x[1]]))


def test_add_scaled_on_tensors_is_one_fused_add():
    """torch.add(x, y, alpha=a): equal to x + y * a to one rounding of the product."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, generator=gen), torch.randn(64, generator=gen)
    out = _math.add_scaled(x, y, -0.731)
    assert torch.equal(out, torch.add(x, y, alpha=-0.731))
    torch.testing.assert_close(out, x + y * -0.731, rtol=0, atol=2e-7)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_predict_x0_inverts_the_forward_process(prediction_type):
    """For x = x0 + sigma * eps (VE), each parameterisation of a perfect model gives x0."""
    rng = np.random.default_rng(1)
    x0, eps, sigma = rng.standard_normal(4), rng.standard_normal(4), 2.5
    x = x0 + sigma * eps
    alpha = 1 / np.sqrt(sigma**2 + 1)  # the VP view of the same point: x * alpha
    out = {
        "epsilon": eps,
        "v_prediction": alpha * eps - sigma * alpha * x0,
        "sample": x0,
    }[prediction_type]
    np.testing.assert_allclose(_math.predict_x0(out, x, sigma, prediction_type), x0, atol=1e-12)


def test_dpm2_step_follows_the_paper_on_a_gaussian():
    """eta = 0, data N(0, 1): the exact denoiser is x / (1 + sigma**2), and one step is
    Euler to the log midpoint, then the midpoint slope from x to sigma_next (no noise)."""
    sigma, nxt = 4.0, 1.0
    x = np.array([[3.0]])
    den = x / (1 + sigma**2)
    mid = np.sqrt(sigma * nxt)
    x_2 = x + (x - den) / sigma * (mid - sigma)
    d_2 = (x_2 - x_2 / (1 + mid**2)) / mid
    expected = x + d_2 * (nxt - sigma)
    calls = []

    def model_mid(x_mid, s):
        calls.append(s)
        return x_mid / (1 + s**2)

    out = _math.dpm2_ancestral_step_unchecked(x, den, model_mid, sigma, nxt, None, eta=0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    assert calls == [pytest.approx(mid, rel=1e-15)]
    # to sigma_next = 0 the step is one Euler step onto the denoised estimate, no second call
    calls.clear()
    last = _math.dpm2_ancestral_step_unchecked(x, den, model_mid, sigma, 0.0, None)
    np.testing.assert_allclose(last, den)
    assert calls == []


def test_dpm2_step_with_per_sample_sigmas_equals_single_steps():
    """A batch whose samples sit at different noise levels (one of them on its last, Euler
    step) equals each sample stepped alone, bit for bit, noise included."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4))
    noise = rng.standard_normal((3, 4))
    sigma = np.array([5.0, 1.5, 0.3])
    nxt = np.array([2.0, 0.4, 0.0])

    def den(v, s):
        return v / (1 + np.asarray(s, dtype=float).reshape(-1, *([1] * (v.ndim - 1))) ** 2)

    batch = _math.dpm2_ancestral_step_unchecked(
        x, den(x, sigma), den, sigma, nxt, noise, eta=0.8, s_noise=0.9
    )
    for i in range(3):
        xi = x[i : i + 1]
        single = _math.dpm2_ancestral_step_unchecked(
            xi, den(xi, sigma[i]), den, sigma[i], nxt[i], noise[i : i + 1], eta=0.8, s_noise=0.9
        )
        np.testing.assert_array_equal(batch[i : i + 1], single)
