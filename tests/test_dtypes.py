"""The dtype policy, in every float dtype (README, "Dtypes").

- Scheduler on tensors: diffusers' type promotion (``sample + dt * model_output`` promotes).
- Scheduler on NumPy arrays: the sample's dtype in, the sample's dtype out (the model output is
  cast to it first).
- ``sample_dpm_2_ancestral``: ``x``'s dtype in and out, whatever the model or noise sampler
  returns (their outputs are cast to it).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kdpm2
import kdpm2.scheduler
from tests.conftest import require_reference

NUMPY_DTYPES = [np.float16, np.float32, np.float64]


def _numpy_loop(dtype, model_dtype):
    sch = kdpm2.scheduler.KDPM2AncestralDiscreteScheduler()
    sch.set_timesteps(3)
    x = np.linspace(-2, 2, 8).reshape(2, 4).astype(dtype) * float(sch.init_noise_sigma)
    rng, outs = np.random.default_rng(0), []
    for t in sch.timesteps:
        eps = np.tanh(sch.scale_model_input(x, t)).astype(model_dtype)
        out = sch.step(eps, t, x, generator=rng)
        outs.append(out)
        x = out.prev_sample
    return outs


@pytest.mark.parametrize(("dtype", "model_dtype"), list(itertools.product(NUMPY_DTYPES, repeat=2)))
def test_numpy_scheduler_keeps_the_sample_dtype(dtype, model_dtype):
    """Every prev_sample and pred_original_sample has the sample's dtype and is finite."""
    for out in _numpy_loop(dtype, model_dtype):
        assert out.prev_sample.dtype == dtype
        assert out.pred_original_sample.dtype == dtype
        assert np.isfinite(out.prev_sample).all()


TORCH_DTYPES = ["float16", "bfloat16", "float32", "float64"]


@pytest.mark.parametrize(("dtype", "model_dtype"), list(itertools.product(TORCH_DTYPES, repeat=2)))
def test_torch_scheduler_promotes_as_diffusers(dtype, model_dtype):
    """On tensors the output dtypes are diffusers' own, for every pair of float dtypes."""
    torch = pytest.importorskip("torch")
    diffusers = require_reference("diffusers")
    dt, mt = getattr(torch, dtype), getattr(torch, model_dtype)
    dtypes = []
    for cls in (kdpm2.KDPM2AncestralDiscreteScheduler, diffusers.KDPM2AncestralDiscreteScheduler):
        sch = cls()
        sch.set_timesteps(3)
        x = torch.linspace(-2, 2, 8).reshape(2, 4).to(dt)
        gen, seen = torch.Generator().manual_seed(0), []
        for t in sch.timesteps[:3]:  # a first half, a second half (noise), a first half
            eps = torch.tanh(sch.scale_model_input(x, t).float()).to(mt)
            prev, x0 = sch.step(eps, t, x, generator=gen, return_dict=False)
            seen.append((prev.dtype, x0.dtype))
            x = prev
        dtypes.append(seen)
    assert dtypes[0] == dtypes[1]


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("answer", NUMPY_DTYPES)
def test_functional_sampler_keeps_x_dtype_numpy(dtype, answer):
    """A model and noise sampler that answer in another dtype do not change x's dtype."""
    x = np.linspace(-1, 1, 8).reshape(2, 4).astype(dtype) * 10

    def model(v, sigma):
        return (v / (1 + sigma[:, None] ** 2)).astype(answer)

    rng = np.random.default_rng(0)
    out = kdpm2.sample_dpm_2_ancestral(
        model,
        x,
        kdpm2.get_sigmas_karras(4, 0.1, 10.0),
        noise_sampler=lambda s, t: rng.standard_normal(x.shape).astype(answer),
        disable=True,
    )
    assert out.dtype == dtype
    assert np.isfinite(out).all()


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
def test_functional_sampler_keeps_x_dtype_torch(dtype):
    """The same on tensors, with a float64 model, in every float dtype (bfloat16 included)."""
    torch = pytest.importorskip("torch")
    x = (torch.linspace(-1, 1, 8).reshape(2, 4) * 10).to(getattr(torch, dtype))

    def model(v, sigma):
        return v.double() / (1 + sigma.double()[:, None] ** 2)

    gen = torch.Generator().manual_seed(0)
    out = kdpm2.sample_dpm_2_ancestral(
        model,
        x,
        kdpm2.get_sigmas_karras(4, 0.1, 10.0, device="cpu"),
        noise_sampler=lambda s, t: torch.randn(x.shape, generator=gen, dtype=torch.float64),
        disable=True,
    )
    assert out.dtype == x.dtype
    assert bool(torch.isfinite(out).all())
