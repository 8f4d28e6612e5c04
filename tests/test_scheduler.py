"""The stateful scheduler: NumPy path, dtypes, prediction types, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

import kdpm2
from kdpm2 import KDPM2AncestralDiscreteScheduler as Scheduler


def _optional_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _numpy_loop(sch, n=5, seed=0, shape=(2, 3), dtype=np.float32, generator=None):
    sch.set_timesteps(n)
    rng = np.random.default_rng(seed)
    gen = rng if generator is None else generator
    x = (float(sch.init_noise_sigma) * rng.standard_normal(shape)).astype(dtype)
    for t in sch.timesteps:
        model_in = sch.scale_model_input(x, t)
        x = sch.step(np.tanh(0.3 * model_in), t, x, generator=gen).prev_sample
    return x


def test_numpy_loop_keeps_dtype_and_is_reproducible():
    """NumPy in, NumPy out, in the input dtype; the same seed gives the same sample."""
    for dtype in (np.float16, np.float32, np.float64):
        a = _numpy_loop(Scheduler(), dtype=dtype)
        b = _numpy_loop(Scheduler(), dtype=dtype)
        assert isinstance(a, np.ndarray)
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()
    c = _numpy_loop(Scheduler(), seed=1)
    assert not np.array_equal(c, _numpy_loop(Scheduler(), seed=0))


def test_numpy_matches_torch_for_the_same_noise(monkeypatch):
    """NumPy and torch loops agree (float32 tolerance) when fed the same model and noise."""
    torch = pytest.importorskip("torch")
    import kdpm2.noise

    rng = np.random.default_rng(3)
    draws = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(5)]
    x0 = rng.standard_normal((2, 4)).astype(np.float32)
    results = []
    for backend in ("numpy", "torch"):
        it = iter(draws)
        monkeypatch.setattr(
            kdpm2.noise,
            "draw",
            # a new array per draw, as draw() gives (the scheduler scales it in place)
            lambda like, gen=None, it=it, b=backend: (
                torch.from_numpy(next(it).copy()) if b == "torch" else next(it).copy()
            ),
        )
        sch = Scheduler()
        sch.set_timesteps(6)
        x = x0 * float(sch.init_noise_sigma)
        x = torch.from_numpy(x) if backend == "torch" else x
        tanh = torch.tanh if backend == "torch" else np.tanh
        for t in sch.timesteps:
            x = sch.step(tanh(sch.scale_model_input(x, t)), t, x).prev_sample
        results.append(np.asarray(x))
    # same float32 ops on both backends; libm tanh may differ by an ulp, carried over 11 calls
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_recover_x0_for_a_perfect_model(prediction_type):
    """A model that predicts exactly (x0 known) gives pred_original_sample == x0 at every call."""
    sch = Scheduler(prediction_type=prediction_type)
    sch.set_timesteps(4)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 2))
    x = x0 + float(sch.init_noise_sigma) * rng.standard_normal((3, 2))
    for k, t in enumerate(sch.timesteps):
        sigma = sch.schedule.call_sigmas[k]
        eps = (x - x0) / sigma
        out = {"epsilon": eps, "sample": x0, "v_prediction": _v(x0, eps, sigma)}[prediction_type]
        res = sch.step(out, t, x, generator=rng)
        np.testing.assert_allclose(res.pred_original_sample, x0, rtol=1e-9, atol=1e-9)
        x = res.prev_sample
    np.testing.assert_allclose(x, x0, rtol=1e-9, atol=1e-9)


def _v(x0, eps, sigma):
    # v in the variance-preserving parametrisation: alpha * eps - sigma_vp * x0
    alpha = 1 / np.sqrt(sigma**2 + 1)
    return alpha * eps - alpha * sigma * x0


def test_failed_call_leaves_state_unchanged():
    """A rejected step() does not advance the loop or change the schedule."""
    sch = Scheduler()
    sch.set_timesteps(3)
    x = np.ones((2, 2), np.float32)
    t0 = sch.timesteps[0]
    sch.step(x, t0, x)
    before = (sch.step_index, sch.state_in_first_order)
    with pytest.raises(ValueError, match="shape"):
        sch.step(np.ones((2, 3), np.float32), sch.timesteps[1], x)
    assert (sch.step_index, sch.state_in_first_order) == before
    with pytest.raises(ValueError, match="num_inference_steps"):
        sch.set_timesteps(0)
    assert sch.num_inference_steps == 3
    assert sch.step_index == 1


BAD_CONSTRUCTOR = [
    ({"beta_schedule": "cosine"}, ValueError, "beta_schedule='cosine' is not supported"),
    ({"prediction_type": "x0"}, ValueError, "prediction_type='x0' is not supported"),
    ({"timestep_spacing": "even"}, ValueError, "timestep_spacing='even' is not supported"),
    ({"use_karras_sigmas": True, "use_beta_sigmas": True}, ValueError, "choose at most one"),
    ({"num_train_timesteps": 0}, ValueError, "num_train_timesteps=0 is invalid"),
    ({"beta_start": 0.0}, ValueError, r"beta_start=0.0 is outside \(0, 1\)"),
    ({"beta_end": 1.5}, ValueError, r"beta_end=1.5 is outside \(0, 1\)"),
    ({"beta_start": 0.02, "beta_end": 0.01}, ValueError, "larger than beta_end"),
    ({"trained_betas": [0.1, 0.2]}, ValueError, "trained_betas has shape"),
    ({"trained_betas": [1.2] * 1000}, ValueError, r"trained_betas contains 1.2, outside \(0, 1\)"),
    ({"steps_offset": -1}, ValueError, "steps_offset=-1 is invalid"),
    ({"eta": 1.5}, ValueError, r"eta=1.5 is outside \[0, 1\]"),
    ({"s_noise": float("nan")}, ValueError, "s_noise=nan is invalid"),
]


@pytest.mark.parametrize(("kwargs", "exc", "message"), BAD_CONSTRUCTOR)
def test_constructor_rejects_bad_arguments(kwargs, exc, message):
    """Each bad constructor argument gets an error naming it, the value and what is accepted."""
    with pytest.raises(exc, match=message):
        Scheduler(**kwargs)


def test_set_timesteps_errors():
    """set_timesteps rejects 0 steps (diffusers accepts it) and undistinguishable steps."""
    sch = Scheduler()
    with pytest.raises(ValueError, match="num_inference_steps=0 is invalid"):
        sch.set_timesteps(0)
    with pytest.raises(TypeError, match=r"num_inference_steps=2\.5 is a float; expected an int"):
        sch.set_timesteps(2.5)
    with pytest.raises(ValueError, match="timestep_spacing='leading' gives at most"):
        Scheduler(timestep_spacing="leading").set_timesteps(1001)
    sch.set_timesteps(1001)  # linspace spaces fractional timesteps: allowed
    assert len(sch.timesteps) == 2001


def test_a_fresh_scheduler_steps_on_the_training_schedule():
    """As in diffusers, a scheduler that never saw set_timesteps runs the
    num_train_timesteps-step schedule; failing means a fresh or freshly loaded scheduler cannot
    scale_model_input/step (diffusers' own tests rely on it)."""
    x = np.linspace(-1, 1, 4, dtype=np.float32).reshape(2, 2)
    fresh, explicit = Scheduler(num_train_timesteps=50), Scheduler(num_train_timesteps=50)
    explicit.set_timesteps(50)
    np.testing.assert_array_equal(fresh.timesteps, explicit.timesteps)
    np.testing.assert_array_equal(
        fresh.scale_model_input(x, 0.0), explicit.scale_model_input(x, 0.0)
    )
    assert fresh.step_index == explicit.step_index == 98
    a = fresh.step(x, 0.0, x).prev_sample
    np.testing.assert_array_equal(a, explicit.step(x, 0.0, x).prev_sample)


def test_step_errors():
    """step after the end, off-schedule timesteps, wrong types: errors."""
    x = np.ones((2, 2), np.float32)
    sch = Scheduler()
    sch.set_timesteps(2)
    with pytest.raises(kdpm2.TimestepNotInScheduleError, match=r"timestep 999\.5 is not in"):
        sch.step(x, 999.5, x)
    with pytest.raises(IndexError):  # diffusers' exception type is kept as a base class
        sch.step(x, 999.5, x)
    with pytest.raises(TypeError, match="not a floating-point type"):
        sch.step(x.astype(np.int32), 999, x.astype(np.int32))
    with pytest.raises(TypeError, match="both must be torch tensors or both NumPy arrays"):
        sch.step(x.tolist(), 999, x)
    for t in sch.timesteps:
        x = sch.step(x, t, x, generator=np.random.default_rng(0)).prev_sample
    with pytest.raises(IndexError, match="after the last timestep"):
        sch.step(x, 0.0, x)


def test_generator_kind_mismatch():
    """A torch generator with NumPy arrays (and the reverse) is rejected; state is unchanged."""
    torch = pytest.importorskip("torch")
    sch = Scheduler()
    sch.set_timesteps(2)
    x = np.ones((2, 2), np.float32)
    with pytest.raises(
        TypeError, match=r"sample is a numpy\.ndarray but generator is a torch\.Generator"
    ):
        sch.step(x, sch.timesteps[0], x, generator=torch.Generator())
    xt = torch.ones(2, 2)
    with pytest.raises(TypeError, match=r"sample is a torch\.Tensor but generator is a numpy"):
        sch.step(xt, sch.timesteps[0], xt, generator=np.random.default_rng())
    with pytest.raises(ValueError, match="list of 3 generators but the batch has 2"):
        sch.step(xt, sch.timesteps[0], xt, generator=[torch.Generator()] * 3)
    assert sch.step_index is None


def test_per_sample_numpy_generators_make_batches_split_invariant():
    """A batch of N with one generator per sample equals N runs of one sample."""
    seeds = [11, 12, 13]
    sch = Scheduler()
    sch.set_timesteps(5)
    x0 = np.stack([np.random.default_rng(s).standard_normal(4) for s in seeds]).astype(np.float32)

    def run(x, gens):
        sch.set_timesteps(5)
        for t in sch.timesteps:
            x = sch.step(np.tanh(sch.scale_model_input(x, t)), t, x, generator=gens).prev_sample
        return x

    batch = run(x0 * float(sch.init_noise_sigma), [np.random.default_rng(100 + s) for s in seeds])
    singles = [
        run(x0[i : i + 1] * float(sch.init_noise_sigma), [np.random.default_rng(100 + s)])
        for i, s in enumerate(seeds)
    ]
    np.testing.assert_array_equal(batch, np.concatenate(singles))


def test_scale_model_input_is_division_by_the_float32_scale_in_every_dtype():
    """If this fails, scale_model_input does not divide by diffusers' scale at some call
    (sqrt(sigma**2 + 1) of the float32 sigma, in float32, applied as a Python float), or it
    changes the input's type or dtype, for inputs of alternating backends and dtypes."""
    sch = Scheduler(use_karras_sigmas=True)
    sch.set_timesteps(6)
    base = np.random.default_rng(0).standard_normal((2, 3, 5)) * 7
    inputs = [base.astype(dt) for dt in (np.float32, np.float16, np.float64)]
    torch = _optional_torch()
    if torch is not None:
        inputs += [
            torch.from_numpy(base).to(dt)
            for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64)
        ]
    x = base.astype(np.float32)
    rng = np.random.default_rng(1)
    for k, t in enumerate(sch.timesteps):
        sigma32 = np.float32(sch.schedule.call_sigmas[k])
        scale = float(np.sqrt(sigma32 * sigma32 + np.float32(1)))
        for inp in inputs:
            got = sch.scale_model_input(inp, t)
            assert type(got) is type(inp)
            assert got.dtype == inp.dtype
            want = inp / scale
            if torch is not None and isinstance(inp, torch.Tensor):
                assert torch.equal(got, want)
            else:
                np.testing.assert_array_equal(got, want)
        x = sch.step(np.tanh(sch.scale_model_input(x, t)), t, x, generator=rng).prev_sample


def test_reused_scheduler_matches_fresh_ones_across_step_counts_and_backends():
    """A scheduler keeps per-step-count tables between set_timesteps calls and per-backend
    forms of them; going back and forth between step counts, backends and dtypes gives, run
    for run, the samples of a new scheduler."""
    torch = _optional_torch()
    runs = [(5, np.float32), (7, np.float32), (5, np.float32), (3, np.float16), (7, np.float64)]
    runs += [(5, np.float64)]
    if torch is not None:
        runs += [(5, torch.float32), (7, torch.float32), (5, torch.float64), (5, np.float32)]
    reused = Scheduler()
    for n, dtype in runs:
        results = []
        for sch in (reused, Scheduler()):
            sch.set_timesteps(n)
            x = np.random.default_rng(n).standard_normal((2, 3)) * float(sch.init_noise_sigma)
            if isinstance(dtype, type):
                x, gen, tanh = x.astype(dtype), np.random.default_rng(0), np.tanh
            else:
                x, gen, tanh = torch.from_numpy(x).to(dtype), torch.manual_seed(0), torch.tanh
            for t in sch.timesteps:
                x = sch.step(tanh(sch.scale_model_input(x, t)), t, x, generator=gen).prev_sample
            results.append(np.asarray(x))
        np.testing.assert_array_equal(results[0], results[1])


def test_loop_over_own_timesteps_starts_without_reading_a_value(monkeypatch):
    """Iterating over scheduler.timesteps, the first call finds its index without reading the
    timestep's value (on an accelerator that read is a host-device sync); any other timestep
    object is looked up by value, with the same result."""
    torch = pytest.importorskip("torch")

    def run(first_t=None):
        sch = Scheduler()
        sch.set_timesteps(4)
        x = torch.linspace(-3, 3, 8).reshape(2, 4) * sch.init_noise_sigma  # no read
        gen = torch.Generator().manual_seed(0)
        for k, t in enumerate(sch.timesteps):
            t = first_t if k == 0 and first_t is not None else t
            x = sch.step(torch.tanh(sch.scale_model_input(x, t)), t, x, generator=gen)[0]
        return x

    reads = []  # every read of a tensor's value back to the host, through torch's own API
    for method in ("item", "tolist", "__float__", "__array__"):
        real = getattr(torch.Tensor, method)

        def counting(self, *args, _real=real, _name=method, **kwargs):
            reads.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counting)
    own = run()
    assert reads == []
    by_value = run(first_t=torch.tensor(999.0))
    assert len(reads) == 1
    assert torch.equal(own, by_value)


@pytest.mark.parametrize(
    ("dtype", "model_dtype"),
    [
        (np.float16, np.float16),
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.float32, np.float64),
        (np.float64, np.float32),
        (np.float16, np.float32),
    ],
)
def test_numpy_step_equals_the_python_float_arithmetic(dtype, model_dtype):
    """A NumPy loop gives, bit for bit, the update written with Python floats from the public
    tables: scale by sqrt(sigma**2 + 1) of the float32 sigma, then x + dt * eps, and after a
    second half up * noise; a model that answers in another dtype has its output cast to the
    sample's dtype first (NumPy's dtype policy: the sample's dtype in, the same dtype out)."""
    sch = Scheduler()
    sch.set_timesteps(5)
    tab = sch.schedule
    x0 = (np.random.default_rng(2).standard_normal((2, 3)) * tab.init_noise_sigma).astype(dtype)

    def model(x):
        return np.tanh(x).astype(model_dtype)

    ours, rng = x0, np.random.default_rng(0)
    for t in sch.timesteps:
        ours = sch.step(model(sch.scale_model_input(ours, t)), t, ours, generator=rng)[0]
    x, start, rng = x0, None, np.random.default_rng(0)
    for k, sigma in enumerate(tab.call_sigmas.tolist()):
        i = k // 2
        sigma32 = np.float32(sigma)
        eps = model(x / float(np.sqrt(sigma32 * sigma32 + np.float32(1)))).astype(dtype)
        if k % 2 == 0:
            start = x
            x = x + (float(tab.sigmas_mid[i]) - float(tab.sigmas[i])) * eps
        else:
            x = start + (float(tab.sigmas_down[i]) - float(tab.sigmas[i])) * eps
            # drawn like the model output, by kdpm2.noise's dtype policy
            drawn = np.float32 if eps.dtype == np.float16 else eps.dtype
            noise = rng.standard_normal(x.shape, dtype=drawn).astype(eps.dtype)
            x = x + float(tab.sigmas_up[i]) * noise
    assert ours.dtype == x.dtype == dtype
    np.testing.assert_array_equal(ours, x)


def test_a_config_change_takes_effect_at_the_next_set_timesteps():
    """diffusers pipelines patch a scheduler's config in place (StableDiffusionPipeline sets
    steps_offset=1 through _internal_dict); the next set_timesteps must use the new config,
    even for a step count the scheduler has already built."""
    sch = Scheduler(timestep_spacing="leading")
    sch.set_timesteps(5)
    assert sch.timesteps[0] == 800
    sch._internal_dict = type(sch.config)({**sch.config, "steps_offset": 1})
    sch.set_timesteps(5)
    assert sch.timesteps[0] == 801


@pytest.mark.parametrize("family", ["diffusion", "flow"])
def test_an_empty_batch_runs_a_whole_loop(family):
    """If this fails, a batch of 0 samples (one generator per sample: none) raises instead of
    giving 0 samples, as a pipeline that filtered out every prompt would see."""
    import kdpm2

    cls = (
        kdpm2.KDPM2AncestralDiscreteScheduler
        if family == "diffusion"
        else kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler
    )
    sch = cls()
    sch.set_timesteps(3)
    x = np.zeros((0, 4), np.float32)
    for t in sch.timesteps:
        x = sch.step(sch.scale_model_input(x, t), t, x, generator=[]).prev_sample
    assert (x.shape, x.dtype) == ((0, 4), np.float32)


def test_the_config_is_read_into_tables_once_per_scheduler(monkeypatch):
    """If this fails, every set_timesteps and every .betas read converts the config mapping
    again: O(num_train_timesteps) each time (0.1 s with a million trained_betas)."""
    from kdpm2.schedule import ScheduleConfig
    from kdpm2.scheduler import KDPM2AncestralDiscreteScheduler as Own

    reads = []
    real = ScheduleConfig.from_mapping.__func__

    def counting(cls, config):
        if not isinstance(config, ScheduleConfig):
            reads.append(config)
        return real(cls, config)

    monkeypatch.setattr(ScheduleConfig, "from_mapping", classmethod(counting))
    sch = Own(num_train_timesteps=4, trained_betas=[0.1, 0.2, 0.3, 0.4])
    for n in (1, 2, 3):
        sch.set_timesteps(n)
    sch.betas, sch.alphas_cumprod, sch.log_sigmas  # noqa: B018 - each reads the tables
    assert len(reads) == 1
