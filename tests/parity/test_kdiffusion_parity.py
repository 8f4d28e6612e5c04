"""Parity of kdpm2.sample_dpm_2_ancestral with k-diffusion 0.1.1.post1's (installed from PyPI).

k-diffusion's package __init__ imports torchvision and more, which break beside a CPU torch;
only its ``sampling.py`` is loaded, with a stub for the one helper it uses from ``utils``.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kdpm2  # noqa: E402


def _load_kdiffusion_sampling():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("KDPM2_REQUIRE_REFERENCES") == "1":
            pytest.fail("k-diffusion==0.1.1.post1 is required (pip install --no-deps)")
        pytest.skip("k-diffusion not installed")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "sampling.py")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = []
    utils = types.ModuleType("k_diffusion.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    saved = {k: sys.modules.get(k) for k in ("k_diffusion", "k_diffusion.utils")}
    sys.modules.update({"k_diffusion": pkg, "k_diffusion.utils": utils})
    try:
        mod_spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


@pytest.fixture(scope="module")
def kd():
    return _load_kdiffusion_sampling()


class CountingNoise:
    """A seeded noise sampler that records how often, and with which sigmas, it was called."""

    def __init__(self, like, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.like = like
        self.calls = []

    def __call__(self, sigma, sigma_next):
        self.calls.append((float(sigma), float(sigma_next)))
        return torch.randn(self.like.shape, generator=self.gen, dtype=self.like.dtype)


def _denoiser(x, sigma):
    # smooth, sigma-dependent stand-in for a network's denoised output
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(x / (1 + s**2) ** 0.5) * 0.8


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("s_noise", [1.0, 0.8])
@pytest.mark.parametrize("sigmas_kind", ["karras", "scheduler"])
def test_matches_kdiffusion(kd, eta, s_noise, sigmas_kind):
    """Same sigmas, model and noise: same result and the same noise draws as k-diffusion.

    Tolerance: float32 ops in a different order and a not correctly rounded float32 sqrt in
    torch give ulp-level differences, measured relative to the initial sample's scale.
    """
    if sigmas_kind == "karras":
        sigmas = kd.get_sigmas_karras(12, 0.03, 14.6)
    else:
        sigmas = kdpm2.get_sigmas_from_config({"beta_schedule": "scaled_linear"}, 12, device="cpu")
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    seen_ref, seen_ours = [], []
    ns_ref, ns_ours = CountingNoise(x, 5), CountingNoise(x, 5)
    ref = kd.sample_dpm_2_ancestral(
        _denoiser,
        x,
        sigmas,
        eta=eta,
        s_noise=s_noise,
        noise_sampler=ns_ref,
        callback=lambda d: seen_ref.append((d["i"], float(d["sigma"]))),
        disable=True,
    )
    ours = kdpm2.sample_dpm_2_ancestral(
        _denoiser,
        x,
        sigmas,
        eta=eta,
        s_noise=s_noise,
        noise_sampler=ns_ours,
        callback=lambda d: seen_ours.append((d["i"], float(d["sigma"]))),
        disable=True,
    )
    assert ns_ours.calls == ns_ref.calls  # same draws at the same steps (even with eta = 0)
    assert seen_ours == seen_ref
    scale = float(x.abs().max())
    assert float((ours - ref).abs().max()) <= 64 * np.finfo(np.float32).eps * scale


def test_eta_zero_is_deterministic_dpm2():
    """With eta=0 the noise is multiplied by 0: any noise sampler gives the same result."""
    sigmas = kdpm2.get_sigmas_karras(8, 0.05, 10.0, device="cpu")
    x = torch.randn(2, 5, generator=torch.Generator().manual_seed(1)) * 10
    a = kdpm2.sample_dpm_2_ancestral(
        _denoiser, x, sigmas, eta=0.0, noise_sampler=CountingNoise(x, 1), disable=True
    )
    b = kdpm2.sample_dpm_2_ancestral(
        _denoiser, x, sigmas, eta=0.0, noise_sampler=CountingNoise(x, 2), disable=True
    )
    assert torch.equal(a, b)
    c = kdpm2.sample_dpm_2_ancestral(
        _denoiser, x, sigmas, eta=1.0, noise_sampler=CountingNoise(x, 2), disable=True
    )
    assert not torch.allclose(a, c)


def test_numpy_equals_torch_for_the_same_noise():
    """The functional sampler gives the same numbers on NumPy as on torch (float32 tolerance)."""
    sig_np = kdpm2.get_sigmas_karras(10, 0.05, 10.0).astype(np.float32)
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32) * 10
    noise = [np.random.default_rng(i).standard_normal((2, 6)).astype(np.float32) for i in range(10)]

    def den_np(x, s):
        return np.tanh(x / np.sqrt(1 + s[:, None] ** 2)) * 0.8

    it = iter(noise)
    a = kdpm2.sample_dpm_2_ancestral(
        den_np, x, sig_np, noise_sampler=lambda s, sn: next(it), disable=True
    )
    it2 = iter(noise)
    b = kdpm2.sample_dpm_2_ancestral(
        _denoiser,
        torch.from_numpy(x),
        torch.from_numpy(sig_np),
        noise_sampler=lambda s, sn: torch.from_numpy(next(it2)),
        disable=True,
    )
    assert a.dtype == np.float32
    np.testing.assert_allclose(b.numpy(), a, rtol=0, atol=64 * np.finfo(np.float32).eps * 10 * 4)


def test_per_sample_sigmas_equal_stacked_single_runs():
    """A batch whose samples follow different schedules equals each sample run on its own."""
    s1 = kdpm2.get_sigmas_karras(6, 0.05, 10.0)
    s2 = kdpm2.get_sigmas_karras(6, 0.1, 5.0)
    x = np.random.default_rng(0).standard_normal((2, 3)) * np.array([[10.0], [5.0]])
    noise = [np.random.default_rng(i).standard_normal((2, 3)) for i in range(6)]

    def den(x, s):
        return np.tanh(x / np.sqrt(1 + np.asarray(s)[:, None] ** 2))

    it = iter(noise)
    batch = kdpm2.sample_dpm_2_ancestral(
        den, x, np.stack([s1, s2], axis=1), noise_sampler=lambda a, b: next(it), disable=True
    )
    singles = []
    for j, sig in enumerate((s1, s2)):
        itj = iter([n[j : j + 1] for n in noise])
        singles.append(
            kdpm2.sample_dpm_2_ancestral(
                den, x[j : j + 1], sig, noise_sampler=lambda a, b, itj=itj: next(itj), disable=True
            )
        )
    np.testing.assert_allclose(batch, np.concatenate(singles), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 12345])
# torchsde's own interval arithmetic lands 1 ulp past the end, for both samplers alike
@pytest.mark.filterwarnings("ignore:Should have tb<=t1:UserWarning")
def test_brownian_tree_noise_matches_kdiffusion(kd, seed):
    """kdpm2's BrownianTreeNoiseSampler gives k-diffusion's noise, bit for bit, for one seed
    and the same queries (forward order, as a sampler asks); a different tree construction
    or normalisation would change every draw."""
    pytest.importorskip("torchsde")
    x = torch.zeros(2, 3, 4)
    sigmas = kdpm2.get_sigmas_karras(6, 0.1, 10.0)
    ours = kdpm2.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=seed)
    ref = kd.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=seed)
    for s, s_next in itertools.pairwise(sigmas[:-1]):
        a = ours(torch.tensor(s), torch.tensor(s_next))
        b = ref(torch.tensor(s), torch.tensor(s_next))
        assert torch.equal(a, b)


@pytest.mark.parametrize("n", [1, 2, 5, 20, 50])
def test_sigma_helpers_give_k_diffusions_tensors(kd, n):
    """If this fails, get_sigmas_karras / get_sigmas_exponential with a device give other
    float32 values than k-diffusion's helpers (they are documented as giving its tensors)."""
    for lo, hi in ((0.0292, 14.6146), (0.002, 80.0), (0.1, 10.0)):
        for rho in (7.0, 3.0):
            ours = kdpm2.get_sigmas_karras(n, lo, hi, rho, device="cpu")
            ref = kd.get_sigmas_karras(n, lo, hi, rho, device="cpu")
            assert (ours.dtype, ours.shape) == (ref.dtype, ref.shape)
            assert torch.equal(ours, ref), (n, lo, hi, rho)
        ours = kdpm2.get_sigmas_exponential(n, lo, hi, device="cpu")
        assert torch.equal(ours, kd.get_sigmas_exponential(n, lo, hi, device="cpu")), (n, lo, hi)
