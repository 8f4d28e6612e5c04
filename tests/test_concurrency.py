"""No global state: threads sampling at once with their own generators match solo runs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import kdpm2


def _class_run(seed):
    sch = kdpm2.KDPM2AncestralDiscreteScheduler(use_karras_sigmas=True)
    sch.set_timesteps(15)
    rng = np.random.default_rng(seed)
    x = (float(sch.init_noise_sigma) * rng.standard_normal((2, 64))).astype(np.float32)
    for t in sch.timesteps:
        x = sch.step(np.tanh(sch.scale_model_input(x, t)), t, x, generator=rng).prev_sample
    return x


def _functional_run(seed):
    rng = np.random.default_rng(seed)
    sigmas = kdpm2.get_sigmas_karras(15, 0.03, 14.6)
    x = sigmas[0] * rng.standard_normal((2, 64))
    return kdpm2.sample_dpm_2_ancestral(
        lambda x, s: np.tanh(x / np.sqrt(1 + s[:, None] ** 2)),
        x,
        sigmas,
        noise_sampler=lambda s, sn: rng.standard_normal(x.shape),
        disable=True,
    )


def test_threads_match_solo_runs():
    """8 concurrent runs of each API equal the same seeds run one after another."""
    seeds = list(range(8))
    for run in (_class_run, _functional_run):
        solo = [run(s) for s in seeds]
        with ThreadPoolExecutor(max_workers=4) as pool:
            threaded = list(pool.map(run, seeds))
        for a, b in zip(solo, threaded, strict=True):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(solo[0], solo[1])
