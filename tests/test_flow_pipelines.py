"""The flow scheduler inside diffusers' flow pipelines (offline, tiny random models).

SD3 (text-to-image and img2img) and Flux, each built from tiny randomly initialised
components with fixed seeds, prompt embeddings passed directly (no text encoders). Also:
the first-order sigmas equal FlowMatchEulerDiscreteScheduler's for its configs and
``set_timesteps`` arguments, and the class is a genuine diffusers scheduler.
"""

from __future__ import annotations

import functools
import logging
import warnings

import numpy as np
import pytest

from tests.conftest import require_reference

torch = pytest.importorskip("torch")
diffusers = require_reference("diffusers")

import kdpm2  # noqa: E402

FlowScheduler = kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler
STEPS = 4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_diffusers():
    # FlowMatchEuler logs a warning for timesteps given without sigmas; tests pass them on purpose
    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity(logging.ERROR)
    yield
    diffusers.utils.logging.set_verbosity(level)


# ------------------------------------------------------------- sigmas equal FlowMatchEuler's
CONFIGS = [
    {},
    {"shift": 3.0},  # SD3
    {"shift": 1.15},
    {"use_dynamic_shifting": True},  # Flux
    {"use_dynamic_shifting": True, "time_shift_type": "linear"},
    {"shift": 3.0, "shift_terminal": 0.1},
    {"shift": 3.0, "use_karras_sigmas": True},
    {"shift": 2.5, "use_exponential_sigmas": True},
    {"shift": 3.0, "use_beta_sigmas": True},
    {"shift": 3.0, "invert_sigmas": True},
    {"num_train_timesteps": 777, "shift": 1.7},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(c) or "default")
@pytest.mark.parametrize("how", ["count", "sigmas", "timesteps", "both"])
def test_first_order_sigmas_equal_flow_match_euler(config, how):
    """If this fails, the flow scheduler's step-start levels or timesteps are not
    FlowMatchEuler's, bit for bit, for this config and set_timesteps form."""
    t_train = config.get("num_train_timesteps", 1000)
    for n in (1, 2, 4, 28, 50):
        kwargs: dict = {"mu": 0.83} if config.get("use_dynamic_shifting") else {}
        args: tuple = (n,) if how in ("count", "both") else ()
        if how in ("sigmas", "both"):
            kwargs["sigmas"] = np.linspace(1.0, 1.0 / n, n)  # what Flux passes
        if how in ("timesteps", "both"):
            kwargs["timesteps"] = np.linspace(0.99 * t_train, t_train / n, n)
        euler = diffusers.FlowMatchEulerDiscreteScheduler(**config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # its NaN case, skipped below
            euler.set_timesteps(*args, **kwargs)
        if torch.isnan(euler.sigmas).any():
            continue  # shift_terminal at N = 1 (diffusers divides 0 by 0); ours is finite
        ours = FlowScheduler.from_config(euler.config)
        ours.set_timesteps(*args, **kwargs)
        assert torch.equal(ours.sigmas, euler.sigmas), (n, ours.sigmas, euler.sigmas)
        # the first halves' timesteps are diffusers' timesteps; the midpoints come between
        assert torch.equal(ours.timesteps[0::2], euler.timesteps), n
        assert len(ours.timesteps) == 2 * n - 1


def test_shift_terminal_at_one_step_is_finite_where_diffusers_is_nan():
    """If this fails, shift_terminal at one step gives NaN levels (as FlowMatchEuler does)."""
    euler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, shift_terminal=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        euler.set_timesteps(1)
    assert torch.isnan(euler.sigmas).any()
    ours = FlowScheduler.from_config(euler.config)
    ours.set_timesteps(1)
    assert torch.isfinite(ours.sigmas).all()


def test_is_a_genuine_diffusers_flow_scheduler():
    """If this fails, where diffusers is installed the flow class is not a diffusers scheduler
    (pipelines would not accept it, or its config machinery is not diffusers' own)."""
    sch = FlowScheduler.from_config(diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config)
    assert isinstance(sch, diffusers.SchedulerMixin)
    assert sch.config.shift == 3.0
    assert diffusers.FlowMatchEulerDiscreteScheduler in sch.compatibles
    euler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(sch.config)
    assert euler.config.shift == 3.0
    assert sch.init_noise_sigma == 1.0


# ------------------------------------------------------------------------ tiny pipelines
def _vae(sample_size: int) -> object:
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8,),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def sd3_pipeline(scheduler_config: dict) -> object:
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_projection_dim=16,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        out_channels=4,
    )
    euler = diffusers.FlowMatchEulerDiscreteScheduler(**scheduler_config)
    none = dict.fromkeys(
        [
            "text_encoder",
            "tokenizer",
            "text_encoder_2",
            "tokenizer_2",
            "text_encoder_3",
            "tokenizer_3",
        ]
    )
    pipe = diffusers.StableDiffusion3Pipeline(
        transformer=transformer, vae=_vae(16), scheduler=euler, **none
    )
    # the README's one line
    pipe.scheduler = FlowScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_pipeline() -> object:
    torch.manual_seed(0)
    transformer = diffusers.FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    # Flux's scheduler config: resolution-dependent shift
    euler = diffusers.FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15
    )
    none = dict.fromkeys(["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"])
    pipe = diffusers.FluxPipeline(transformer=transformer, vae=_vae(32), scheduler=euler, **none)
    pipe.scheduler = FlowScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embeddings(seq: int, dim: int, pooled: int) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "prompt_embeds": torch.randn(1, seq, dim, generator=g),
        "pooled_prompt_embeds": torch.randn(1, pooled, generator=g),
    }


class CallLog:
    """Record the timestep of every transformer call."""

    def __init__(self, transformer):
        self.timesteps: list[float] = []
        transformer.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.timesteps.append(float(kwargs["timestep"][0]))


def run(pipe, seed: int = 0, **kwargs) -> np.ndarray:
    # the pipelines pass no generator to step(): the fresh noise comes from the global RNG
    torch.manual_seed(seed)
    out = pipe(
        guidance_scale=1.0,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    )
    return out.images


SD3_INPUTS = {**embeddings(5, 16, 8), "height": 16, "width": 16}
FLUX_INPUTS = {**embeddings(5, 32, 32), "height": 16, "width": 16}


def test_sd3_text_to_image():
    """If this fails, an SD3 pipeline with the flow scheduler does not make 2N - 1 transformer
    calls or does not give a finite image."""
    pipe = sd3_pipeline({"shift": 3.0})
    log = CallLog(pipe.transformer)
    image = run(pipe, **SD3_INPUTS)
    assert np.isfinite(image).all()
    assert len(log.timesteps) == 2 * STEPS - 1
    np.testing.assert_allclose(log.timesteps, pipe.scheduler.timesteps.numpy())
    again = run(pipe, **SD3_INPUTS)
    np.testing.assert_array_equal(image, again)  # same seeds, same image
    other = run(pipe, seed=1, **SD3_INPUTS)
    assert np.abs(image - other).max() > 0.05


def test_sd3_with_dynamic_shifting_passes_mu():
    """If this fails, the SD3 pipeline's resolution-dependent mu does not reach the flow
    scheduler's set_timesteps."""
    pipe = sd3_pipeline({"shift": 3.0, "use_dynamic_shifting": True})
    log = CallLog(pipe.transformer)
    assert np.isfinite(run(pipe, **SD3_INPUTS)).all()
    assert len(log.timesteps) == 2 * STEPS - 1


def test_sd3_img2img_starts_mid_schedule():
    """If this fails, SD3 img2img cannot start the flow scheduler mid-schedule (begin index and
    scale_noise at that step's level)."""
    pipe = diffusers.StableDiffusion3Img2ImgPipeline(**sd3_pipeline({"shift": 3.0}).components)
    pipe.set_progress_bar_config(disable=True)
    log = CallLog(pipe.transformer)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    out = run(pipe, image=image, strength=0.6, **embeddings(5, 16, 8))
    assert np.isfinite(out).all()
    # strength 0.6 of 4 steps skips 1 step: 3 steps left, 2 * 3 - 1 calls from index 2
    assert len(log.timesteps) == 2 * 3 - 1
    np.testing.assert_allclose(log.timesteps, pipe.scheduler.timesteps[2:].numpy())


def test_flux_passes_sigmas_and_mu():
    """If this fails, the Flux pipeline's custom sigmas and mu are not accepted by the flow
    scheduler."""
    pipe = flux_pipeline()
    log = CallLog(pipe.transformer)
    calls = []
    original = pipe.scheduler.set_timesteps

    @functools.wraps(original)  # keeps the signature diffusers inspects for `sigmas`
    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    pipe.scheduler.set_timesteps = spy
    image = run(pipe, **FLUX_INPUTS)
    assert np.isfinite(image).all()
    assert calls
    assert calls[0]["sigmas"] is not None
    assert calls[0]["mu"] is not None
    assert len(log.timesteps) == 2 * STEPS - 1
    # Flux feeds the model t / 1000
    np.testing.assert_allclose(log.timesteps, pipe.scheduler.timesteps.numpy() / 1000, rtol=1e-6)


@pytest.mark.parametrize("build", [sd3_pipeline, flux_pipeline], ids=["sd3", "flux"])
def test_pipeline_saves_and_loads_with_the_scheduler(build, tmp_path):
    """If this fails, a pipeline saved with the flow scheduler does not load back with it and
    its config."""
    pipe = build({"shift": 3.0}) if build is sd3_pipeline else build()
    inputs = SD3_INPUTS if build is sd3_pipeline else FLUX_INPUTS
    pipe.scheduler = FlowScheduler.from_config(pipe.scheduler.config, eta=0.5)
    before = run(pipe, **inputs)
    pipe.save_pretrained(tmp_path)
    # the tiny pipelines have no text encoders: say so, as a pipeline built without them must
    absent = {k: None for k, v in pipe.components.items() if v is None}
    loaded = type(pipe).from_pretrained(tmp_path, **absent)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler) is FlowScheduler
    assert loaded.scheduler.config.eta == 0.5
    np.testing.assert_allclose(run(loaded, **inputs), before, atol=1e-6)
