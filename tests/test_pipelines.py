"""kdpm2's scheduler as a drop-in inside real diffusers pipelines (offline, tiny random models).

Each test swaps kdpm2's scheduler into a StableDiffusion pipeline built from tiny randomly
initialised components (fixed seeds) and checks what a user would see: the same images as
with diffusers' own KDPM2AncestralDiscreteScheduler, per-image seeds, save/load of the whole
pipeline, the output object, and the progress bar and callbacks.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from tests.conftest import require_reference

torch = pytest.importorskip("torch")
diffusers = require_reference("diffusers")
transformers = require_reference("transformers")

import kdpm2  # noqa: E402

# Images are float32 in [0, 1]. kdpm2 and diffusers do the same float32 step arithmetic in a
# different order (kdpm2 fuses x + dt * d and rounds its float64 coefficients once), so a
# latent differs by a few ulp per call; the tiny UNet and VAE carry that through without
# amplification. Measured: up to 4e-6 (img2img), 1e-6 (txt2img). 2e-5 is ~170 ulp of 1.0,
# 1/200 of an 8-bit grey level, and ~3e-5 of the change a different seed makes (~0.7; the
# tests assert > 0.05, so the bound cannot hide a wrong seed).
IMAGE_ATOL = 2e-5
EPS32 = float(np.finfo(np.float32).eps)
STEPS = 4
PROMPT = "a photo of a cat"

# Stable Diffusion's own scheduler config (PNDM), as a pipeline would carry it.
SD_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and a busy machine then stays predictable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def components():
    """Tiny UNet, VAE, CLIP text encoder and tokenizer, randomly initialised with fixed seeds."""
    return tiny_components()


def tiny_components():
    """Build the tiny random components (offline: no download, fixed seeds)."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    torch.manual_seed(0)
    text_encoder = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=64,
            max_position_embeddings=77,
        )
    )
    # a character-level vocabulary: enough for prompts to differ, built without a download
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    for module in (unet, vae, text_encoder):
        module.eval()
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer}


def _pipe(components, cls=None, scheduler=None):
    cls = cls or diffusers.StableDiffusionPipeline
    pipe = cls(
        **components,
        scheduler=diffusers.PNDMScheduler.from_config(SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    if scheduler is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PNDM-only keys, named in one warning
            pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
    return pipe


def _generate(pipe, seed=0, **kwargs):
    kwargs.setdefault("prompt", PROMPT)
    if "image" not in kwargs:
        kwargs.setdefault("height", 32)
        kwargs.setdefault("width", 32)
    gen = (
        [torch.Generator().manual_seed(s) for s in seed]
        if isinstance(seed, list)
        else (torch.Generator().manual_seed(seed))
    )
    return pipe(num_inference_steps=STEPS, generator=gen, output_type="np", **kwargs).images


def _init_image():
    rng = np.random.default_rng(7)
    return rng.uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)


# ---------------------------------------------------------------------- same images
@pytest.mark.parametrize(
    "overrides", [{}, {"use_karras_sigmas": True, "timestep_spacing": "trailing"}]
)
def test_text_to_image_matches_diffusers_scheduler(components, overrides):
    """txt2img with kdpm2's scheduler gives diffusers' scheduler's images for the same seed.

    Failing means the swap changes pictures: a step, the noise draws, init_noise_sigma or
    scale_model_input differ from diffusers' inside the real pipeline loop.
    """
    ref = _pipe(components, scheduler=diffusers.KDPM2AncestralDiscreteScheduler)
    ours = _pipe(components, scheduler=kdpm2.KDPM2AncestralDiscreteScheduler)
    if overrides:
        ref.scheduler = diffusers.KDPM2AncestralDiscreteScheduler.from_config(
            ref.scheduler.config, **overrides
        )
        ours.scheduler = kdpm2.KDPM2AncestralDiscreteScheduler.from_config(
            ours.scheduler.config, **overrides
        )
    assert isinstance(ours.scheduler, kdpm2.KDPM2AncestralDiscreteScheduler)
    expected = _generate(ref)
    actual = _generate(ours)
    assert expected.shape == actual.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=IMAGE_ATOL)
    assert np.abs(_generate(ours, seed=1) - actual).max() > 0.05  # the seed matters


def test_image_to_image_matches_diffusers_scheduler(components):
    """img2img at strength 0.5 (set_begin_index, add_noise mid-schedule): diffusers' images."""
    cls = diffusers.StableDiffusionImg2ImgPipeline
    ref = _pipe(components, cls, scheduler=diffusers.KDPM2AncestralDiscreteScheduler)
    ours = _pipe(components, cls, scheduler=kdpm2.KDPM2AncestralDiscreteScheduler)
    image = _init_image()
    expected = _generate(ref, image=image, strength=0.5)
    actual = _generate(ours, image=image, strength=0.5)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=IMAGE_ATOL)
    assert ours.scheduler.begin_index == 2 * (STEPS // 2)  # started mid-schedule
    stronger = _generate(ours, image=image, strength=1.0)
    assert np.abs(stronger - actual).max() > 0.05  # the strength matters


def test_generator_list_gives_each_image_its_own_seed(components):
    """A batch of 4 with one generator per image equals 4 single runs with those seeds.

    Batched and single UNet calls may sum in a different order on the CPU, hence the float32
    tolerance; a shared or reordered noise stream would change the images by ~0.1.
    """
    pipe = _pipe(components, scheduler=kdpm2.KDPM2AncestralDiscreteScheduler)
    seeds = [3, 1, 4, 1]
    batch = _generate(pipe, seed=seeds, prompt=[PROMPT] * 4)
    singles = np.concatenate([_generate(pipe, seed=s) for s in seeds])
    assert batch.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(batch, singles, rtol=0, atol=IMAGE_ATOL)
    # same seed, same image (to the same float tolerance: batch positions may sum differently)
    np.testing.assert_allclose(batch[1], batch[3], rtol=0, atol=IMAGE_ATOL)
    assert np.abs(batch[0] - batch[1]).max() > 0.05

    ref = _pipe(components, scheduler=diffusers.KDPM2AncestralDiscreteScheduler)
    np.testing.assert_allclose(
        batch, _generate(ref, seed=seeds, prompt=[PROMPT] * 4), rtol=0, atol=IMAGE_ATOL
    )


# ------------------------------------------------------------------------ save / load
def test_pipeline_save_and_load_bring_back_kdpm2_scheduler(components, tmp_path):
    """pipe.save_pretrained + DiffusionPipeline.from_pretrained restore kdpm2's scheduler.

    Failing means the scheduler is dropped on save (diffusers writes [null, null] for a class
    it cannot save) or comes back as another class or with another config.
    """
    pipe = _pipe(components, scheduler=kdpm2.KDPM2AncestralDiscreteScheduler)
    pipe.scheduler = kdpm2.KDPM2AncestralDiscreteScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=True, eta=0.5
    )
    expected = _generate(pipe)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["scheduler"] == ["kdpm2", "KDPM2AncestralDiscreteScheduler"]
    saved = json.loads((tmp_path / "pipe" / "scheduler" / "scheduler_config.json").read_text())
    assert (saved["use_karras_sigmas"], saved["eta"]) == (True, 0.5)

    loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded, diffusers.StableDiffusionPipeline)
    assert isinstance(loaded.scheduler, kdpm2.KDPM2AncestralDiscreteScheduler)

    def public(config):
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(pipe.scheduler.config) == public(loaded.scheduler.config)
    np.testing.assert_array_equal(expected, _generate(loaded))

    loaded.save_pretrained(tmp_path / "again")  # what was loaded can be saved again
    index = json.loads((tmp_path / "again" / "model_index.json").read_text())
    assert index["scheduler"] == ["kdpm2", "KDPM2AncestralDiscreteScheduler"]

    # a fresh process: diffusers loads a library's class only once the library is imported
    # (it refuses to import a module just because a saved pipeline names it)
    code = f"""
        import diffusers
        import kdpm2  # the one step the user needs; the class is resolved by diffusers
        pipe = diffusers.DiffusionPipeline.from_pretrained({str(tmp_path / "pipe")!r})
        print(type(pipe.scheduler).__module__, pipe.scheduler.config["eta"])
        """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["kdpm2", "0.5"]


def test_saved_schedulers_cross_over_between_libraries(components, tmp_path):
    """Each library's saved pipeline runs with the other library's scheduler, same images.

    Passing a scheduler to from_pretrained is the usual way to swap one: it must work both
    ways (diffusers checks the passed object against the SchedulerMixin it finds beside the
    saved class, which for "kdpm2" is diffusers' own), also with an unrelated scheduler.
    """
    ref = _pipe(components, scheduler=diffusers.KDPM2AncestralDiscreteScheduler)
    ours = _pipe(components, scheduler=kdpm2.KDPM2AncestralDiscreteScheduler)
    ref.save_pretrained(tmp_path / "by_diffusers")
    ours.save_pretrained(tmp_path / "by_kdpm2")
    expected = _generate(ref)

    sch = kdpm2.KDPM2AncestralDiscreteScheduler.from_pretrained(
        tmp_path / "by_diffusers", subfolder="scheduler"
    )
    a = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "by_diffusers", scheduler=sch)
    assert a.scheduler is sch

    ref_sch = diffusers.KDPM2AncestralDiscreteScheduler.from_pretrained(
        tmp_path / "by_kdpm2", subfolder="scheduler"
    )
    b = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "by_kdpm2", scheduler=ref_sch)
    assert b.scheduler is ref_sch
    for pipe in (a, b):
        pipe.set_progress_bar_config(disable=True)
        np.testing.assert_allclose(_generate(pipe), expected, rtol=0, atol=IMAGE_ATOL)

    euler = diffusers.EulerDiscreteScheduler.from_config(ours.scheduler.config)
    c = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "by_kdpm2", scheduler=euler)
    assert c.scheduler is euler


def test_scheduler_is_a_genuine_diffusers_scheduler():
    """Where diffusers is installed, kdpm2's public class is a diffusers scheduler.

    It derives from diffusers' SchedulerMixin and ConfigMixin (what save_pretrained and the
    load-time checks test), kdpm2.SchedulerMixin is diffusers' (what from_pretrained looks
    up beside the saved class name), and model_index.json names it "kdpm2".
    """
    import inspect

    cls = kdpm2.KDPM2AncestralDiscreteScheduler
    assert issubclass(cls, diffusers.SchedulerMixin)
    assert issubclass(cls, diffusers.ConfigMixin)
    assert kdpm2.SchedulerMixin is diffusers.SchedulerMixin
    assert (cls.__module__, cls.__name__) == ("kdpm2", "KDPM2AncestralDiscreteScheduler")
    params = list(inspect.signature(cls).parameters)
    assert params[:2] == ["num_train_timesteps", "beta_start"]
    sch = cls(eta=0.5)
    assert type(pickle.loads(pickle.dumps(sch))) is cls
    assert diffusers.KDPM2AncestralDiscreteScheduler in sch.compatibles
    assert sch.ignore_for_config == []
    assert cls._deprecated_kwargs == []


def test_diffusers_config_habits(tmp_path):
    """What diffusers users do with a scheduler's config works as with diffusers' own."""
    sch = kdpm2.KDPM2AncestralDiscreteScheduler(num_train_timesteps=800)
    with pytest.warns(FutureWarning, match="num_train_timesteps"):
        assert sch.num_train_timesteps == 800
    assert "_use_default_values" in sch.config
    new, unused = kdpm2.KDPM2AncestralDiscreteScheduler.from_config(
        {**sch.config, "skip_prk_steps": True}, return_unused_kwargs=True
    )
    sch.register_to_config(test_attribute=5)
    assert sch.config.test_attribute == 5
    assert unused == {"skip_prk_steps": True}
    assert new.config.num_train_timesteps == 800
    sch.save_pretrained(tmp_path)
    loaded = kdpm2.KDPM2AncestralDiscreteScheduler.from_pretrained(tmp_path)
    assert loaded.config["_class_name"] == "KDPM2AncestralDiscreteScheduler"
    assert loaded.config["_diffusers_version"] == diffusers.__version__


@pytest.mark.parametrize("n", [np.int64(5), "tensor"])
def test_set_timesteps_takes_numpy_and_tensor_integers(n):
    """diffusers accepts a NumPy integer or a 0-d integer tensor as the step count."""
    sch = kdpm2.KDPM2AncestralDiscreteScheduler()
    sch.set_timesteps(torch.tensor(5) if n == "tensor" else n)
    assert sch.num_inference_steps == 5


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_attributes_have_diffusers_meaning(steps):
    """The tables diffusers exposes as attributes hold diffusers' values, in its layout."""
    config = {"beta_schedule": "scaled_linear", "use_karras_sigmas": True}
    ours = kdpm2.KDPM2AncestralDiscreteScheduler(**config)
    ref = diffusers.KDPM2AncestralDiscreteScheduler(**config)
    for s in (ours, ref):
        s.set_timesteps(steps)
    # diffusers' float32 sigmas and their logs differ in the last ulp between CPUs (torch's and
    # NumPy's SIMD paths): rtol covers a few ulps; atol the log near 0, where a one-ulp relative
    # change of sigma moves log(sigma) by up to EPS32. One ulp of sigma_up is amplified in
    # sigma_down = sqrt(sigma_next**2 - sigma_up**2) by (sigma_up / sigma_down)**2 (49 at 4
    # steps), and reaches sigmas_interpol, the geometric mean of sigma and sigma_down.
    up, down = ours.sigmas_up.double(), ours.sigmas_down.double()
    gain = 1 + torch.where(down > 0, (up / down.clamp_min(1e-30)) ** 2, 0)
    for name in ("sigmas", "sigmas_interpol", "sigmas_up", "sigmas_down", "log_sigmas"):
        a, b = getattr(ours, name), getattr(ref, name)
        assert (type(a), a.dtype, a.shape) == (type(b), b.dtype, b.shape), name
        # diffusers pads sigmas_up with the NaN of 0/0 after the last step; kdpm2 with 0
        nan = b.isnan()
        assert int(nan.sum()) <= (3 if name == "sigmas_up" else 0), name
        assert bool((a[nan] == 0).all()), name
        rtol = 4 * EPS32 * (gain if name in ("sigmas_down", "sigmas_interpol") else 1)
        bound = (rtol * b.double().abs() + 2 * EPS32)[~nan]
        error = (a.double() - b.double()).abs()[~nan]
        assert bool((error <= bound).all()), (name, error.max())
    for name in ("betas", "alphas", "alphas_cumprod"):
        # torch.linspace rounds start + step * i once (vectorised kernels) or twice (portable
        # ones): 1 ulp in a beta, up to 3 ulps after scaled_linear's square and the cumprod
        a, b = getattr(ours, name), getattr(ref, name)
        torch.testing.assert_close(a, b, rtol=4 * EPS32, atol=0, msg=name)
    init = ours.init_noise_sigma
    assert (type(init), init.dtype, init.shape) == (torch.Tensor, torch.float32, ())
    torch.testing.assert_close(init, ref.init_noise_sigma)
    x = torch.ones(1, 2)
    assert ours.sample is None
    ours.step(x, ours.timesteps[0], x)
    assert ours.sample is x  # the first half's sample, kept for the second half


def test_import_loads_neither_torch_nor_diffusers_and_schedulers_are_always_saveable():
    """``import kdpm2`` is light; a scheduler created before the user imports diffusers is
    still a diffusers scheduler (so pipe.save_pretrained cannot silently drop it); with
    diffusers blocked, the public class is kdpm2's own."""
    code = """
        import json, sys
        import kdpm2
        light = "torch" not in sys.modules and "diffusers" not in sys.modules
        before = kdpm2.KDPM2AncestralDiscreteScheduler()
        import diffusers
        print(json.dumps([light, isinstance(before, diffusers.SchedulerMixin)]))
        """
    blocked = """
        import json, sys
        sys.modules["diffusers"] = None
        import kdpm2, kdpm2.scheduler
        cls = kdpm2.KDPM2AncestralDiscreteScheduler
        print(json.dumps([cls is kdpm2.scheduler.KDPM2AncestralDiscreteScheduler,
                          kdpm2.SchedulerMixin is kdpm2.scheduler.SchedulerMixin]))
        """
    for source, expected in ((code, [True, True]), (blocked, [True, True])):
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(source)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == expected


# ------------------------------------------------------------------- output and loop
def test_step_output_behaves_like_diffusers_output():
    """Attribute, index and key access, unpacking, keys/values/items/to_tuple: as diffusers'.

    Pipelines use `step(...)[0]` and `step(..., return_dict=False)[0]`; user code uses the rest.
    """
    ref = diffusers.KDPM2AncestralDiscreteScheduler()
    ours = kdpm2.KDPM2AncestralDiscreteScheduler()
    outputs = []
    for sch in (ref, ours):
        sch.set_timesteps(3)
        x = torch.ones(1, 2, 2) * sch.init_noise_sigma
        t = sch.timesteps[0]
        out = sch.step(0.1 * sch.scale_model_input(x, t), t, x)
        sch.set_timesteps(3)
        prev, x0 = sch.step(0.1 * sch.scale_model_input(x, t), t, x, return_dict=False)
        outputs.append((out, prev, x0))
    (r, r_prev, r_x0), (o, o_prev, o_x0) = outputs
    assert list(r.keys()) == list(o.keys()) == ["prev_sample", "pred_original_sample"]
    assert list(r) == list(o)
    assert len(r) == len(o) == 2
    for name in r:
        torch.testing.assert_close(getattr(o, name), getattr(r, name))
        torch.testing.assert_close(o[name], r[name])
    torch.testing.assert_close(o[0], r[0])
    torch.testing.assert_close(o[1], r[1])
    assert o[0] is o.prev_sample
    assert o[1] is o.pred_original_sample
    for got, want in zip(o.values(), r.values(), strict=True):
        torch.testing.assert_close(got, want)
    assert [k for k, _ in o.items()] == [k for k, _ in r.items()]
    assert len(o.to_tuple()) == len(r.to_tuple()) == 2
    torch.testing.assert_close(o_prev, r_prev)
    torch.testing.assert_close(o_x0, r_x0)


class _ProgressRecorder:
    """Stands in for the pipeline's tqdm bar and logs what the loop reports to it."""

    def __init__(self, log, total):
        self.log = log
        log.append(("total", total))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        self.log.append(("update", n))


def test_progress_and_callbacks_match_diffusers_scheduler(components):
    """Same progress-bar total and updates, at the same calls, and the same callbacks.

    The pipeline derives both from `scheduler.order` (2) and `len(scheduler.timesteps)`; with
    another order or length the bar would advance at other model calls (or count 2N - 1
    steps), and callbacks would see other timesteps.
    """
    records = []
    for scheduler in (
        diffusers.KDPM2AncestralDiscreteScheduler,
        kdpm2.KDPM2AncestralDiscreteScheduler,
    ):
        pipe = _pipe(components, scheduler=scheduler)
        events, latents = [], []

        def progress_bar(iterable=None, total=None, log=events):
            return _ProgressRecorder(log, total)

        def on_step_end(pipe, i, t, kwargs, log=events, seen=latents):
            log.append(("callback", i, float(t)))
            seen.append(kwargs["latents"].clone())
            return kwargs

        pipe.progress_bar = progress_bar
        _generate(pipe, callback_on_step_end=on_step_end)
        records.append((events, latents))
    (ref_events, ref_latents), (events, latents) = records

    # one bar step per DPM2 step: after each second-half call, and after the final Euler call
    def updates_after_calls(events):
        last_call, out = None, []
        for event in events:
            if event[0] == "callback":
                last_call = event[1]
            elif event[0] == "update":
                out.append(last_call)
        return out

    assert events[0] == ("total", STEPS)
    assert [e[1] for e in events if e[0] == "callback"] == list(range(2 * STEPS - 1))
    assert updates_after_calls(events) == [1, 3, 5, 6]
    assert [e[:2] for e in ref_events] == [e[:2] for e in events]
    # timesteps: float32 on the train-step scale, ~8 ulp of 999 (measured: 1 ulp)
    np.testing.assert_allclose(
        [e[2] for e in events if e[0] == "callback"],
        [e[2] for e in ref_events if e[0] == "callback"],
        rtol=0,
        atol=4 * EPS32 * 1000,
    )
    # latents: a few ulp per op relative to the largest latent so far, as in tests/parity
    # (measured: 10 ulp over the 7 calls)
    largest = 0.0
    for a, b in zip(ref_latents, latents, strict=True):
        largest = max(largest, float(a.abs().max()))
        assert float((a - b).abs().max()) <= 256 * EPS32 * (1 + largest)


def test_denoiser_from_network_takes_a_diffusers_unet_as_it_is():
    """If this fails, wrapping a diffusers UNet (which returns a UNet2DConditionOutput, or a
    tuple with return_dict=False) needs a hand-written adapter again."""
    unet = tiny_components()["unet"].eval()
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 5
    sigma = torch.tensor([5.0, 2.0])
    emb = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = kdpm2.denoiser_from_network(
            lambda x_in, t, **kw: unet(x_in, t, **kw).sample, SD_SCHEDULER
        )(x, sigma, encoder_hidden_states=emb)
        as_object = kdpm2.denoiser_from_network(unet, SD_SCHEDULER)(
            x, sigma, encoder_hidden_states=emb
        )
        as_tuple = kdpm2.denoiser_from_network(unet, SD_SCHEDULER)(
            x, sigma, encoder_hidden_states=emb, return_dict=False
        )
    assert torch.equal(direct, as_object)
    assert torch.equal(direct, as_tuple)
    assert not torch.equal(direct, x)  # the network did something
