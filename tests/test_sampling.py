"""The k-diffusion-style helpers: what k-diffusion users pass in, and what they get back."""

from __future__ import annotations

import numpy as np
import pytest

import kdpm2
import kdpm2.scheduler


def test_sigma_helpers_take_numpy_scalars_and_return_fresh_writable_arrays():
    """NumPy scalars work as bounds; the result is a new, writable float64 array (a read-only
    one makes torch.as_tensor warn, and a shared one could be changed behind the caller)."""
    a = kdpm2.get_sigmas_karras(4, np.float32(0.1), np.float64(10.0))
    b = kdpm2.get_sigmas_karras(4, float(np.float32(0.1)), 10.0)
    np.testing.assert_array_equal(a, b)
    for out in (a, kdpm2.get_sigmas_exponential(4, 0.1, 10.0), kdpm2.get_sigmas_from_config({}, 4)):
        assert out.dtype == np.float64
        assert out.flags.writeable
    first, second = kdpm2.get_sigmas_from_config({}, 4), kdpm2.get_sigmas_from_config({}, 4)
    first[0] = -1.0
    assert second[0] > 0


def test_tensor_bounds_give_kdiffusions_float32_tensor():
    """0-d tensor bounds (how k-diffusion code often calls it) give a float32 tensor on their
    device, with the same values as float bounds give."""
    torch = pytest.importorskip("torch")
    out = kdpm2.get_sigmas_karras(4, torch.tensor(0.1), torch.tensor(10.0))
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32
    expected = kdpm2.get_sigmas_karras(4, float(torch.tensor(0.1)), 10.0).astype(np.float32)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_a_scheduler_can_stand_for_its_config():
    """denoiser_from_network and get_sigmas_from_config take a scheduler or its config."""
    sch = kdpm2.scheduler.KDPM2AncestralDiscreteScheduler(
        beta_schedule="scaled_linear", prediction_type="v_prediction"
    )
    np.testing.assert_array_equal(
        kdpm2.get_sigmas_from_config(sch, 5), kdpm2.get_sigmas_from_config(sch.config, 5)
    )
    x, sigma = np.ones((2, 3)), np.array([1.0, 4.0])

    def network(x_in, t):
        return np.tanh(x_in + t[:, None] / 1000)

    a = kdpm2.denoiser_from_network(network, sch)(x, sigma)
    b = kdpm2.denoiser_from_network(network, dict(sch.config))(x, sigma)
    c = kdpm2.denoiser_from_network(network, {})(x, sigma)  # epsilon, linear betas
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_a_schedule_that_stops_above_zero_is_a_partial_run():
    """Splitting a schedule (ComfyUI's refiner hand-off) and running both parts equals one run
    without noise; the first part ends at its last sigma, not at 0."""
    sig = kdpm2.get_sigmas_karras(6, 0.1, 10.0)

    def model(x, s):
        return x / (1 + s[:, None] ** 2)

    x = np.full((1, 2), 10.0)
    whole = kdpm2.sample_dpm_2_ancestral(model, x, sig, eta=0.0, disable=True)
    half = kdpm2.sample_dpm_2_ancestral(model, x, sig[:4], eta=0.0, disable=True)
    rest = kdpm2.sample_dpm_2_ancestral(model, half, sig[3:], eta=0.0, disable=True)
    np.testing.assert_array_equal(whole, rest)
    assert not np.allclose(half, whole)
