"""Tests for the demo models: the bundled digits network and the exact Gaussian mixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from kdpm2.demo._sigmas import sigmas_at, training_sigmas
from kdpm2.demo.digits import (
    DEMO_DIR,
    FLOW_DIR,
    MANIFEST_PATH,
    WEIGHTS_PATH,
    DigitsDenoiser,
    DigitsNetSpec,
    WeightsError,
    file_digest,
    forward_numpy,
    init_params,
    load_digits_denoiser,
    read_weights,
    timestep_embedding,
)
from kdpm2.demo.gmm import GaussianMixture2D, GMMDenoiser, default_mixture
from kdpm2.schedule import train_schedule_from_config

CONFIG = json.loads((DEMO_DIR / "scheduler_config.json").read_text())


def _random_params(spec: DigitsNetSpec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = init_params(spec, rng)
    # Init zeroes biases and block outputs; perturb everything so each tensor matters.
    return {
        k: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()
    }


def _copy_bundle(tmp_path: Path) -> Path:
    shutil.copy(WEIGHTS_PATH, tmp_path / WEIGHTS_PATH.name)
    shutil.copy(MANIFEST_PATH, tmp_path / MANIFEST_PATH.name)
    return tmp_path / WEIGHTS_PATH.name


def _rewrite_manifest(weights: Path) -> None:
    sha256, size = file_digest(weights)
    manifest = {"files": {weights.name: {"sha256": sha256, "size": size}}}
    (weights.parent / MANIFEST_PATH.name).write_text(json.dumps(manifest))


# --- the two forward passes -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_forward_matches_torch_forward_on_random_weights(seed):
    """If this fails, `kdpm2 sample` (NumPy) no longer runs the network that was trained (torch)."""
    torch = pytest.importorskip("torch")
    from kdpm2.demo.digits import forward_torch

    spec = DigitsNetSpec(width=32, num_blocks=2, embed_dim=16)
    params = _random_params(spec, seed)
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((7, 64)).astype(np.float32)
    t = rng.uniform(0, 999, 7)  # fractional, one per sample

    expected = forward_torch(
        {k: torch.from_numpy(v) for k, v in params.items()}, torch.from_numpy(x), t
    )
    actual = forward_numpy(params, x, t)
    assert actual.dtype == np.float32
    np.testing.assert_allclose(expected.numpy(), actual, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_dir", [DEMO_DIR, FLOW_DIR], ids=["digits", "digits-flow"])
def test_numpy_and_torch_denoisers_agree_on_bundled_weights(model_dir):
    """If this fails, --backend numpy and --backend torch sample from different models."""
    torch = pytest.importorskip("torch")
    params = read_weights(model_dir / WEIGHTS_PATH.name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 8, 8)).astype(np.float32)
    for t in (999.0, 812.37, 0.0):
        expected = DigitsDenoiser(params, "torch")(torch.from_numpy(x), torch.tensor(t))
        actual = DigitsDenoiser(params, "numpy")(x, np.float64(t))
        assert expected.shape == (16, 8, 8)
        # float32 matmuls in different orders; the outputs are O(1).
        np.testing.assert_allclose(expected.numpy(), actual, rtol=1e-4, atol=1e-4)


def test_timestep_embedding_takes_scalars_arrays_and_tensors_alike():
    """If this fails, the model sees different timesteps depending on how they are passed."""
    torch = pytest.importorskip("torch")
    expected = timestep_embedding(np.full(3, 812.37), 3, 16)
    for t in (
        812.37,
        np.float32(812.37),
        np.array(812.37),
        torch.tensor(812.37, dtype=torch.float64),
    ):
        np.testing.assert_allclose(expected, timestep_embedding(t, 3, 16), rtol=0, atol=1e-5)
    assert not np.allclose(expected, timestep_embedding(812.0, 3, 16))


def test_bundled_network_denoises_real_digits():
    """If this fails, the shipped weights are untrained or the forward pass is wrong.

    At sigma 0.5 the network's estimate of x0 from x_t must be much closer to the clean digit than
    x_t itself (mean squared error ratio 0.25 per pixel before denoising).
    """
    from sklearn.datasets import load_digits

    x0 = (load_digits().data[:200] / 8.0 - 1.0).astype(np.float32)
    train_sigmas = training_sigmas(CONFIG)
    t = 300.0
    sigma = float(sigmas_at(t, train_sigmas))
    rng = np.random.default_rng(0)
    x_t = x0 + sigma * rng.standard_normal(x0.shape).astype(np.float32)
    eps = DigitsDenoiser(read_weights())(x_t / np.sqrt(sigma**2 + 1.0), t)
    denoised = x_t - sigma * eps
    noisy_error = np.mean((x_t - x0) ** 2)
    denoised_error = np.mean((denoised - x0) ** 2)
    assert denoised_error < 0.2 * noisy_error, (sigma, noisy_error, denoised_error)


# --- weights integrity --------------------------------------------------------------------------


def test_bundled_weights_match_their_manifest():
    """If this fails, the committed weights and manifest.json are out of step: re-run the script."""
    manifest = json.loads(MANIFEST_PATH.read_text())
    sha256, size = file_digest(WEIGHTS_PATH)
    assert manifest["files"][WEIGHTS_PATH.name] == {"sha256": sha256, "size": size}
    assert size < 8_000_000


def test_flipped_byte_is_reported_as_corrupt(tmp_path):
    """If this fails, a damaged weights file loads silently and the demo draws garbage."""
    weights = _copy_bundle(tmp_path)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt") as info:
        read_weights(weights)
    message = str(info.value)
    assert str(weights) in message
    assert "train_digits.py" in message
    assert "Reinstall" in message


def test_truncated_file_is_reported_as_truncated(tmp_path):
    """If this fails, a half-downloaded weights file gives a confusing parse error."""
    weights = _copy_bundle(tmp_path)
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(WeightsError, match=r"truncated: 1000 bytes, expected \d+"):
        read_weights(weights)


def test_missing_file_and_missing_manifest_name_the_file(tmp_path):
    """If this fails, a missing file raises a bare FileNotFoundError without a fix."""
    with pytest.raises(WeightsError, match="missing") as info:
        read_weights(tmp_path / "digits.safetensors")
    assert str(tmp_path / "digits.safetensors") in str(info.value)
    shutil.copy(WEIGHTS_PATH, tmp_path / WEIGHTS_PATH.name)
    with pytest.raises(WeightsError, match=r"manifest .* is missing"):
        read_weights(tmp_path / WEIGHTS_PATH.name)


def test_garbage_with_a_matching_hash_is_reported_as_unparsable(tmp_path):
    """If this fails, a bad file that passes the hash check crashes with a safetensors trace."""
    weights = tmp_path / "digits.safetensors"
    weights.write_bytes(b"\xff" * 64)
    _rewrite_manifest(weights)
    with pytest.raises(WeightsError, match="cannot be parsed as safetensors"):
        read_weights(weights)


def test_weights_of_the_wrong_shape_are_rejected(tmp_path):
    """If this fails, weights from another network load and fail later inside a matmul."""
    params = _random_params(DigitsNetSpec(width=16, num_blocks=1, embed_dim=8), 0)
    params["out.b"] = np.zeros(10, np.float32)
    weights = tmp_path / "digits.safetensors"
    weights.write_bytes(save(params))
    _rewrite_manifest(weights)
    with pytest.raises(WeightsError, match=r"'out.b' has shape \(10,\), expected \(64,\)"):
        read_weights(weights)
    del params["out.b"]
    weights.write_bytes(save(params))
    _rewrite_manifest(weights)
    with pytest.raises(WeightsError, match=r"missing \['out.b'\]"):
        read_weights(weights)


# --- timesteps and sigmas -----------------------------------------------------------------------


@pytest.mark.parametrize("karras", [False, True])
def test_sigmas_at_inverts_the_schedulers_timestep_map(karras):
    """If this fails, the models read the scheduler's fractional timesteps as the wrong noise level.

    At every call the scheduler scales the sample by 1 / sqrt(sigma**2 + 1) for the sigma it
    means by `t`; `sigmas_at(t)` must give that sigma back. The scheduler's tables are rounded to
    float32 (as diffusers' are), hence the 1e-4 relative tolerance. With Karras sigmas diffusers
    rounds the timesteps of whole steps to integers, so there the sigma need only belong to a
    timestep within half a step of `t`.
    """
    kdpm2 = pytest.importorskip("kdpm2")
    if not hasattr(kdpm2, "KDPM2AncestralDiscreteScheduler"):
        pytest.skip(reason="kdpm2.KDPM2AncestralDiscreteScheduler is not available")
    scheduler = kdpm2.KDPM2AncestralDiscreteScheduler.from_config(CONFIG, use_karras_sigmas=karras)
    scheduler.set_timesteps(7)
    train_sigmas = training_sigmas(CONFIG)
    x = np.ones((1, 2))
    rng = np.random.default_rng(0)
    checked = 0
    for t in scheduler.timesteps:
        scale = float(np.asarray(scheduler.scale_model_input(x, t))[0, 0]) / float(x[0, 0])
        sigma = np.sqrt(1.0 / scale**2 - 1.0)
        if karras:
            low, high = sigmas_at([float(t) - 0.5, float(t) + 0.5], train_sigmas)
            assert low * (1 - 1e-4) <= sigma <= high * (1 + 1e-4), (float(t), sigma, low, high)
        else:
            np.testing.assert_allclose(sigma, sigmas_at(float(t), train_sigmas), rtol=1e-4)
        x = scheduler.step(np.zeros_like(x), t, x, generator=rng).prev_sample
        checked += 1
    assert checked == 13


def test_training_sigmas_match_the_closed_form_ends():
    """If this fails, the demo models and the scheduler disagree on the forward process."""
    sigmas = training_sigmas(CONFIG)
    betas = np.linspace(CONFIG["beta_start"], CONFIG["beta_end"], 1000)
    assert CONFIG["beta_schedule"] == "linear"
    # the table is the scheduler's own, built in float32 as diffusers does: the closed form
    # holds to float32 rounding accumulated over the 1000-term product (~1e-5 relative)
    np.testing.assert_array_equal(sigmas, train_schedule_from_config(CONFIG).sigmas)
    np.testing.assert_allclose(sigmas[0], np.sqrt(betas[0] / (1 - betas[0])), rtol=2e-5)
    np.testing.assert_allclose(sigmas[-1], np.sqrt(1 / np.prod(1 - betas) - 1), rtol=2e-5)
    np.testing.assert_allclose(sigmas_at(499.5, sigmas), np.sqrt(sigmas[499] * sigmas[500]))


# --- the Gaussian mixture oracle ----------------------------------------------------------------


def test_gmm_denoiser_of_one_gaussian_is_the_linear_shrinkage():
    """If this fails, the mixture's posterior mean is wrong even in the one-component case."""
    mix = GaussianMixture2D(np.array([[1.0, -2.0]]), np.array([0.5]), np.array([1.0]))
    x = np.array([[3.0, 0.0], [-1.0, 4.0]])
    for sigma in (0.1, 1.0, 10.0):
        expected = mix.means + (x - mix.means) * 0.25 / (0.25 + sigma**2)
        np.testing.assert_allclose(expected, mix.denoise(x, sigma), rtol=1e-12)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0])
def test_gmm_denoiser_matches_monte_carlo_posterior_mean(sigma):
    """If this fails, the exact GMM denoiser (a sampler test oracle) is not E[x0 | x].

    Importance sampling: E[x0 | x] = sum_i x0_i N(x; x0_i, sigma^2) / sum_i N(x; x0_i, sigma^2)
    over 4e5 prior draws; its error here is below 0.02.
    """
    mix = default_mixture()
    rng = np.random.default_rng(0)
    prior = mix.sample(400_000, rng)
    x = np.array([[1.5, 0.3], [0.2, -0.1], [-2.2, 1.9]])
    for point, expected_mean in zip(x, mix.denoise(x, sigma), strict=True):
        log_w = -((prior - point) ** 2).sum(axis=1) / (2 * sigma**2)
        w = np.exp(log_w - log_w.max())
        mc_mean = (w[:, None] * prior).sum(axis=0) / w.sum()
        np.testing.assert_allclose(expected_mean, mc_mean, atol=0.02)


def test_gmm_model_recovers_sigma_from_the_timestep():
    """If this fails, --model gmm is not the exact eps predictor for the scheduler's inputs."""
    model = GMMDenoiser(scheduler_config=CONFIG)
    mix = default_mixture()
    sigma = float(training_sigmas(CONFIG)[400])
    x = np.array([[1.0, 1.0], [-3.0, 0.5]])
    expected = (x - mix.denoise(x, sigma)) / sigma
    actual = model(x / np.sqrt(sigma**2 + 1.0), 400.0)
    np.testing.assert_allclose(expected, actual, rtol=1e-10)
    assert model(x.astype(np.float32), 400.0).dtype == np.float32


def test_gmm_density_integrates_to_one():
    """If this fails, the scatter plot's background is not the mixture's density."""
    mix = default_mixture()
    grid = np.linspace(-6, 6, 601)
    gx, gy = np.meshgrid(grid, grid)
    density = mix.density(np.stack([gx, gy], axis=-1))
    np.testing.assert_allclose(1.0, density.sum() * (grid[1] - grid[0]) ** 2, rtol=1e-3)


# --- the rectified-flow model -------------------------------------------------------------------

FLOW_WEIGHTS = FLOW_DIR / WEIGHTS_PATH.name


def test_flow_weights_match_their_manifest():
    """If this fails, digits_flow/'s weights and manifest.json are out of step: re-run
    `python scripts/train_digits.py --flow`."""
    manifest = json.loads((FLOW_DIR / MANIFEST_PATH.name).read_text())
    sha256, size = file_digest(FLOW_WEIGHTS)
    assert manifest["files"][FLOW_WEIGHTS.name] == {"sha256": sha256, "size": size}
    assert size < 8_000_000
    assert manifest["training"]["objective"].startswith("velocity")


def test_flow_scheduler_config_has_flow_match_euler_keys():
    """If this fails, digits_flow/scheduler_config.json names another scheduler or lacks a
    FlowMatchEulerDiscreteScheduler setting (diffusers 0.42.1's keys; shift 1 is what the model
    was trained for)."""
    config = json.loads((FLOW_DIR / "scheduler_config.json").read_text())
    expected = {
        "_class_name": "FlowMatchKDPM2AncestralDiscreteScheduler",
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": False,
        "base_shift": 0.5,
        "max_shift": 1.15,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "invert_sigmas": False,
        "shift_terminal": None,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "time_shift_type": "exponential",
        "eta": 1.0,
        "s_noise": 1.0,
    }
    assert expected == config


def test_flow_scheduler_config_keys_are_diffusers_flow_match_euler_keys():
    """If this fails, diffusers' FlowMatchEulerDiscreteScheduler gained or lost a setting that
    digits_flow/scheduler_config.json does not follow. eta and s_noise are the ancestral knobs;
    stochastic_sampling is left out because the ancestral sampler draws its own noise (the
    scheduler does not take it)."""
    diffusers = pytest.importorskip("diffusers")
    import inspect

    params = inspect.signature(diffusers.FlowMatchEulerDiscreteScheduler.__init__).parameters
    expected = {name for name in params if name != "self"} - {"stochastic_sampling"}
    config = json.loads((FLOW_DIR / "scheduler_config.json").read_text())
    assert expected | {"eta", "s_noise"} == set(config) - {"_class_name"}


def test_flow_network_predicts_the_velocity_of_real_digits():
    """If this fails, the shipped flow weights are untrained, predict something other than the
    velocity eps - x0 (the eps weights fail here), or read the timestep on another scale.

    At s = 0.3 (timestep 300) the estimate x_s - s * v of x0 must be much closer to the clean
    digit than x_s itself: the shipped weights give 0.16 of the squared error, the eps weights
    0.75, the flow weights called at timestep s or 1000 * (1 - s) 1.58 and 0.55.
    """
    from sklearn.datasets import load_digits

    x0 = (load_digits().data[:200] / 8.0 - 1.0).astype(np.float32)
    s = 0.3
    rng = np.random.default_rng(0)
    x_s = (1 - s) * x0 + s * rng.standard_normal(x0.shape).astype(np.float32)
    v = load_digits_denoiser(model_dir=FLOW_DIR)(x_s, 1000 * s)
    denoised = x_s - s * v
    noisy_error = np.mean((x_s - x0) ** 2)
    denoised_error = np.mean((denoised - x0) ** 2)
    assert denoised_error < 0.25 * noisy_error, (noisy_error, denoised_error)


def test_model_dir_picks_the_weights_and_path_excludes_it():
    """If this fails, --model digits-flow may run the diffusion weights (or the reverse), or a
    call naming two weights files silently picks one."""
    flow = load_digits_denoiser(model_dir=FLOW_DIR)
    default = load_digits_denoiser()
    x = np.zeros((1, 64), np.float32)
    np.testing.assert_array_equal(
        DigitsDenoiser(read_weights(FLOW_WEIGHTS))(x, 500.0), flow(x, 500.0)
    )
    assert not np.allclose(default(x, 500.0), flow(x, 500.0), atol=0.1)
    with pytest.raises(TypeError, match=r"got path='.*digits.safetensors' and model_dir="):
        load_digits_denoiser(path=WEIGHTS_PATH, model_dir=FLOW_DIR)
