"""Config persistence: from_config, scheduler_config.json, round trips with diffusers, copies.

What must hold is diffusers' contract (any mapping in, unknown keys ignored with one warning,
``_`` keys and ``_use_default_values`` honoured, a sorted JSON file with ``_class_name``), plus
ours: writes are atomic, load errors name the file and the key, and a scheduler copied or
pickled mid-loop continues exactly as the original would.
"""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import numpy as np
import pytest

import kdpm2
import kdpm2._io
import kdpm2.config
from kdpm2 import FrozenConfig
from kdpm2.scheduler import KDPM2AncestralDiscreteScheduler as Scheduler

EPS32 = float(np.finfo(np.float32).eps)

# configs away from the defaults in every key diffusers knows, plus the extra ones we add
CONFIGS = [
    {
        "beta_schedule": "scaled_linear",
        "use_karras_sigmas": True,
        "prediction_type": "v_prediction",
    },
    {"beta_schedule": "linear", "timestep_spacing": "leading", "steps_offset": 1},
    {
        "beta_schedule": "squaredcos_cap_v2",
        "timestep_spacing": "trailing",
        "use_exponential_sigmas": True,
        "num_train_timesteps": 800,
    },
    {
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "eta": 0.5,
        "s_noise": 0.9,
        "discard_penultimate_sigma": True,
    },
]
DIFFUSERS_CONFIGS = [  # the keys diffusers' own class reads, so it builds the same schedule
    {k: v for k, v in cfg.items() if k not in ("eta", "s_noise", "discard_penultimate_sigma")}
    for cfg in CONFIGS
]


def _numpy_loop(sch, n, seed=0, start=0, stop=None, x=None, rng=None):
    """Run calls start..stop of an n-step loop with a smooth toy model; return (x, rng)."""
    if start == 0:
        sch.set_timesteps(n)
        rng = np.random.default_rng(seed)
        x = (float(sch.init_noise_sigma) * rng.standard_normal((2, 3, 4))).astype(np.float32)
    for t in sch.timesteps[start:stop]:
        out = sch.step(np.tanh(0.3 * sch.scale_model_input(x, t)), t, x, generator=rng)
        x = out.prev_sample
    return x, rng


def _torch_loop(sch, n, seed=0):
    """A full n-step torch loop; returns every prev_sample and pred_original_sample, stacked."""
    import torch

    sch.set_timesteps(n)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2, 4, 8, 8), generator=gen) * float(sch.init_noise_sigma)
    prev, x0 = [], []
    for t in sch.timesteps:
        out = sch.step(torch.tanh(0.3 * sch.scale_model_input(x, t)), t, x, generator=gen)
        x = out.prev_sample
        prev.append(x)
        x0.append(out.pred_original_sample)
    return torch.stack(prev).double(), torch.stack(x0).double()


def _unknown_key_warnings(record):
    return [str(w.message) for w in record if "does not use" in str(w.message)]


# --------------------------------------------------------------------------- from_config
def test_from_config_accepts_dict_frozenconfig_and_scheduler():
    """A dict, a FrozenConfig and a scheduler object give the same scheduler, silently."""
    cfg = {"beta_schedule": "scaled_linear", "timestep_spacing": "trailing"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = Scheduler.from_config(cfg)
        b = Scheduler.from_config(FrozenConfig(a.config))
        c = Scheduler.from_config(b)
    assert a.config["beta_schedule"] == "scaled_linear"
    assert a.config["timestep_spacing"] == "trailing"
    assert a.config == b.config == c.config


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "PNDMScheduler", "DDIMScheduler"])
def test_from_config_of_a_diffusers_scheduler_warns_once_listing_unknown_keys(name):
    """A diffusers FrozenDict loads, known keys are taken, the rest named in exactly one warning.

    The config is the one a pipeline has after loading a saved scheduler_config.json, where
    every key is explicit. Failing means another scheduler's config either silently changes
    ours, or its extra keys are dropped without telling the user (or with one warning each).
    """
    diffusers = pytest.importorskip("diffusers")
    cls = getattr(diffusers, name)
    saved = dict(
        cls(
            beta_schedule="scaled_linear",
            beta_start=0.0001,
            beta_end=0.02,
            prediction_type="v_prediction",
            timestep_spacing="trailing",
        ).config
    )
    other = cls.from_config({k: v for k, v in saved.items() if not k.startswith("_")})
    assert not other.config.get("_use_default_values")  # every key explicit, as when loaded
    known = set(Scheduler._config_keys())
    expected_unknown = sorted(k for k in other.config if not k.startswith("_") and k not in known)
    assert expected_unknown  # each of these schedulers has keys of its own
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sch = Scheduler.from_config(other.config)
    messages = _unknown_key_warnings(record)
    assert len(messages) == 1, messages
    assert str(expected_unknown) in messages[0]
    for key in ("beta_schedule", "beta_start", "beta_end", "prediction_type", "timestep_spacing"):
        assert other.config[key] == sch.config[key], key
    assert record[0].filename == __file__  # stacklevel points at the caller's line


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "PNDMScheduler", "DDIMScheduler"])
def test_from_config_of_a_default_diffusers_scheduler_takes_our_defaults(name):
    """A freshly built diffusers scheduler lists every key in _use_default_values: no warning,
    and each key gets kdpm2's default, exactly as diffusers' own KDPM2 class does."""
    diffusers = pytest.importorskip("diffusers")
    other = getattr(diffusers, name)(beta_schedule="scaled_linear")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sch = Scheduler.from_config(other.config)
    ref = diffusers.KDPM2AncestralDiscreteScheduler.from_config(other.config)
    expected = dict(Scheduler(beta_schedule="scaled_linear").config)
    assert expected == dict(sch.config)
    for key, value in ref.config.items():
        if not key.startswith("_"):
            assert value == sch.config[key], key


def test_underscore_keys_are_dropped_silently():
    """`_class_name`, `_diffusers_version` and other metadata keys never warn and never load."""
    cfg = {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.42.1",
        "_private": 1,
        "beta_schedule": "scaled_linear",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sch = Scheduler.from_config(cfg)
    assert sch.config["beta_schedule"] == "scaled_linear"
    assert not any(k.startswith("_") for k in sch.config)


def test_overrides_win_over_the_config():
    """Keyword overrides replace config values, including keys named in _use_default_values."""
    cfg = {
        "beta_end": 0.02,
        "timestep_spacing": "leading",
        "_use_default_values": ["timestep_spacing"],
    }
    sch = Scheduler.from_config(cfg, beta_end=0.015, timestep_spacing="trailing")
    assert sch.config["beta_end"] == 0.015
    assert sch.config["timestep_spacing"] == "trailing"


def test_use_default_values_keys_take_our_defaults():
    """Keys diffusers filled with *its* defaults (listed in _use_default_values) get ours.

    DDIM's default spacing is "leading"; a DDIM config that never set it must give our
    "linspace", as diffusers' own KDPM2AncestralDiscreteScheduler.from_config does.
    """
    cfg = {
        "beta_schedule": "scaled_linear",
        "timestep_spacing": "leading",
        "_use_default_values": ["timestep_spacing"],
    }
    sch = Scheduler.from_config(cfg)
    assert sch.config["timestep_spacing"] == "linspace"
    assert sch.config["beta_schedule"] == "scaled_linear"

    diffusers = pytest.importorskip("diffusers")
    ddim = diffusers.DDIMScheduler.from_config({"beta_schedule": "scaled_linear"})
    assert "timestep_spacing" in ddim.config["_use_default_values"]
    assert ddim.config["timestep_spacing"] == "leading"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = Scheduler.from_config(ddim.config)
    ref = diffusers.KDPM2AncestralDiscreteScheduler.from_config(ddim.config)
    assert ref.config["timestep_spacing"] == ours.config["timestep_spacing"] == "linspace"


def test_from_config_rejects_a_non_mapping():
    """A path or other non-mapping gets a TypeError that says what to pass instead."""
    with pytest.raises(TypeError, match=r"config must be a mapping .* got str"):
        Scheduler.from_config("some/dir")


def test_config_is_a_read_only_dict_that_diffusers_accepts():
    """scheduler.config is a dict (diffusers' from_config treats non-dicts as paths) and frozen.

    Failing means `diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)`, the
    usual way to swap schedulers, breaks once kdpm2's scheduler is in a pipeline.
    """
    sch = Scheduler(beta_schedule="scaled_linear")
    assert isinstance(sch.config, dict)
    assert sch.config.beta_schedule == "scaled_linear"
    with pytest.raises(TypeError, match="read-only"):
        sch.config["beta_schedule"] = "linear"
    with pytest.raises(TypeError, match="read-only"):
        sch.config.update(beta_schedule="linear")
    with pytest.raises(AttributeError, match="read-only"):
        sch.config.beta_schedule = "linear"
    assert sch.config["beta_schedule"] == "scaled_linear"
    assert json.loads(json.dumps(sch.config)) == dict(sch.config)
    assert pickle.loads(pickle.dumps(sch.config)) == sch.config
    assert hash(FrozenConfig(dict(sch.config))) == hash(sch.config)

    diffusers = pytest.importorskip("diffusers")
    euler = diffusers.EulerDiscreteScheduler.from_config(sch.config)
    assert euler.config["beta_schedule"] == "scaled_linear"


# ------------------------------------------------------------------------------- saving
def test_save_config_writes_sorted_indented_json_with_class_name(tmp_path):
    """The file is diffusers' format: sorted keys, indent 2, `_class_name`, numpy as lists."""
    betas = np.linspace(1e-4, 0.02, 10)
    sch = Scheduler(num_train_timesteps=10, trained_betas=betas, eta=0.5)
    path = sch.save_config(tmp_path / "new" / "dir")
    assert path == tmp_path / "new" / "dir" / "scheduler_config.json"
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert data["_class_name"] == "KDPM2AncestralDiscreteScheduler"
    assert data["_kdpm2_version"] == kdpm2.__version__
    assert data["trained_betas"] == betas.tolist()
    assert {k: v for k, v in data.items() if not k.startswith("_")} == dict(sch.config)


def test_save_config_into_a_file_path_is_an_error(tmp_path):
    """Passing a file where a directory is expected says so instead of writing beside it."""
    f = tmp_path / "x.json"
    f.write_text("{}")
    with pytest.raises(ValueError, match=r"x\.json.* is a file; pass a directory"):
        Scheduler().save_pretrained(f)


class _HalfWriter:
    """A file object that writes half of what it is given, then fails like a full disk."""

    def __init__(self, f):
        self._f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False

    def write(self, text):
        self._f.write(text[: len(text) // 2])
        self._f.flush()
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("failure", ["write", "replace"])
def test_a_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch, failure):
    """A save interrupted half-way (disk full, or the final rename failing) changes nothing.

    Failing means a crash during save_pretrained can leave a truncated scheduler_config.json
    (or litter the directory with temporary files).
    """
    old = Scheduler(beta_schedule="scaled_linear")
    old.save_pretrained(tmp_path)
    before = (tmp_path / "scheduler_config.json").read_bytes()
    if failure == "write":
        monkeypatch.setattr(
            kdpm2._io,
            "open",
            lambda *a, **k: _HalfWriter(open(*a, **k)),  # noqa: SIM115 - closed by _HalfWriter
            raising=False,
        )
    else:

        def fail(*args):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(kdpm2.config.os, "replace", fail)
    with pytest.raises(OSError, match=r"No space left|Input/output"):
        Scheduler(beta_schedule="linear", eta=0.0).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert before == (tmp_path / "scheduler_config.json").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scheduler_config.json"]
    assert Scheduler.from_pretrained(tmp_path).config == old.config


# ------------------------------------------------------------------------------ loading
def test_save_load_round_trip_gives_identical_config_and_steps(tmp_path):
    """save -> from_pretrained (dir, subfolder, or the file) -> the same config, bit-equal steps."""
    for i, cfg in enumerate(CONFIGS):
        sch = Scheduler(**cfg)
        sch.save_pretrained(tmp_path / "model" / f"s{i}")
        loaded = [
            Scheduler.from_pretrained(tmp_path / "model" / f"s{i}"),
            Scheduler.from_pretrained(tmp_path / "model", subfolder=f"s{i}"),
            Scheduler.from_pretrained(tmp_path / "model" / f"s{i}" / "scheduler_config.json"),
        ]
        expected, _ = _numpy_loop(sch, 6)
        for other in loaded:
            assert sch.config == other.config
            actual, _ = _numpy_loop(other, 6)
            np.testing.assert_array_equal(expected, actual)


def test_from_pretrained_overrides_and_unknown_keys(tmp_path):
    """Overrides win when loading; unknown file keys give one warning naming the file."""
    path = tmp_path / "scheduler_config.json"
    path.write_text(
        json.dumps({"beta_schedule": "scaled_linear", "clip_sample": False, "skip_prk_steps": True})
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        sch = Scheduler.from_pretrained(tmp_path, eta=0.25)
    assert (sch.config["beta_schedule"], sch.config["eta"]) == ("scaled_linear", 0.25)
    messages = _unknown_key_warnings(record)
    assert len(messages) == 1
    assert str(path) in messages[0]
    assert "['clip_sample', 'skip_prk_steps']" in messages[0]


BAD_FILES = [
    ("missing", None, FileNotFoundError, r"no scheduler config at .*scheduler_config\.json"),
    (
        "malformed",
        '{"beta_schedule": "linear",\n}',
        ValueError,
        r"scheduler_config\.json: not valid JSON \(.* line 2, column 1\)",
    ),
    (
        "not an object",
        "[1, 2]",
        ValueError,
        r"scheduler_config\.json: expected a JSON object, got list",
    ),
    (
        "wrong type",
        '{"use_karras_sigmas": "false"}',
        TypeError,
        r"scheduler_config\.json: use_karras_sigmas='false' is a str; expected True or False",
    ),
    (
        "wrong type number",
        '{"beta_end": "0.012"}',
        TypeError,
        r"scheduler_config\.json: beta_end='0\.012' is a str; expected a number in \(0, 1\)",
    ),
    (
        "invalid value",
        '{"beta_schedule": "cosine"}',
        ValueError,
        r"scheduler_config\.json: beta_schedule='cosine' is not supported; expected one of",
    ),
    (
        "invalid number",
        '{"eta": 2}',
        ValueError,
        r"scheduler_config\.json: eta=2 is outside \[0, 1\]",
    ),
]


@pytest.mark.parametrize(
    ("case", "text", "exc", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
def test_from_pretrained_errors_name_the_file_and_the_key(tmp_path, case, text, exc, message):
    """Every load failure says which file, which key, what was found and what is accepted.

    Failing means a bad file either loads silently (a string "false" is truthy, so it would
    switch Karras sigmas *on*) or fails with a message that does not say where to look.
    """
    if text is not None:
        (tmp_path / "scheduler_config.json").write_text(text)
    with pytest.raises(exc, match=message) as info:
        Scheduler.from_pretrained(tmp_path)
    assert str(tmp_path) in str(info.value)


# ------------------------------------------------------------------ round trips with diffusers
@pytest.mark.parametrize("index", range(len(DIFFUSERS_CONFIGS)))
def test_kdpm2_config_loads_in_diffusers_and_the_reverse(tmp_path, index):
    """A file saved by either library loads in the other and gives the same numbers.

    Checked both ways against the config's own scheduler: timesteps and sigmas, and a full
    seeded 10-step loop (every prev_sample and pred_original_sample). Failing means a key is
    written under a name, type or meaning that the other library reads differently.
    """
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    cfg = DIFFUSERS_CONFIGS[index]
    ours = Scheduler(**cfg)
    ours.save_pretrained(tmp_path / "kdpm2")
    ref = diffusers.KDPM2AncestralDiscreteScheduler(**cfg)
    ref.save_pretrained(tmp_path / "diffusers")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers logs that it ignores our extra keys
        ref_loaded = diffusers.KDPM2AncestralDiscreteScheduler.from_pretrained(tmp_path / "kdpm2")
    ours_loaded = Scheduler.from_pretrained(tmp_path / "diffusers")
    assert ours.config == ours_loaded.config
    for key in cfg:
        assert cfg[key] == ref_loaded.config[key], key

    for a, b in ((ref_loaded, ours), (ref, ours_loaded)):
        a.set_timesteps(10)
        b.set_timesteps(10)
        # float32 tables: the parity suite pins them to a few ulp; timesteps live on the
        # train-step scale: ~8 ulp of the largest one (measured: 1 ulp; see tests/parity)
        np.testing.assert_allclose(b.sigmas.numpy(), a.sigmas.numpy(), rtol=4 * EPS32, atol=0)
        t_scale = cfg.get("num_train_timesteps", 1000)
        np.testing.assert_allclose(
            b.timesteps.numpy(), a.timesteps.numpy(), rtol=0, atol=4 * EPS32 * t_scale
        )
        prev_a, x0_a = _torch_loop(a, 10)
        prev_b, x0_b = _torch_loop(b, 10)
        # relative to the largest sample so far, as in tests/parity: a few ulp per op over
        # 19 calls of a Lipschitz-0.3 model
        scale = 1 + prev_a.flatten(1).abs().max(dim=1).values.cummax(0).values
        scale = scale.reshape(-1, 1, 1, 1, 1)
        assert float(((prev_a - prev_b).abs() / scale).max()) <= 256 * EPS32
        assert float(((x0_a - x0_b).abs() / scale).max()) <= 256 * EPS32


# --------------------------------------------------------------------------- copies
def _scheduler_class(form):
    """kdpm2's own class, or the diffusers-backed one (what kdpm2's public name resolves to
    where diffusers is installed)."""
    if form == "plain":
        return Scheduler
    pytest.importorskip("diffusers")
    import kdpm2._diffusers

    return kdpm2._diffusers.KDPM2AncestralDiscreteScheduler


COPIERS = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
}


@pytest.mark.parametrize("form", ["plain", "diffusers"])
@pytest.mark.parametrize("how", sorted(COPIERS))
def test_numpy_scheduler_copied_mid_loop_continues_identically(form, how):
    """A copy (with a copy of the generator) taken after any number of calls, odd ones too
    (mid DPM2 step, with a stored first-half sample), finishes the loop bit-identically.

    Failing means some loop state (step index, stored sample, cached tables) is lost or shared.
    """
    cls = _scheduler_class(form)
    n = 4
    sch = cls(beta_schedule="scaled_linear", use_karras_sigmas=True)
    expected, _ = _numpy_loop(sch, n)
    total = 2 * n - 1
    for k in range(total):
        sch = cls(beta_schedule="scaled_linear", use_karras_sigmas=True)
        x, rng = _numpy_loop(sch, n, stop=k)
        twin_sch, twin_x, twin_rng = COPIERS[how]((sch, x, rng))
        assert type(twin_sch) is type(sch)
        assert twin_sch.step_index == sch.step_index
        first, _ = _numpy_loop(sch, n, start=k, x=x, rng=rng)
        second, _ = _numpy_loop(twin_sch, n, start=k, x=twin_x, rng=twin_rng)
        np.testing.assert_array_equal(expected, first)
        np.testing.assert_array_equal(expected, second)


@pytest.mark.parametrize("form", ["plain", "diffusers"])
@pytest.mark.parametrize("how", sorted(COPIERS))
def test_torch_scheduler_copied_mid_loop_continues_identically(form, how):
    """As the NumPy test, with torch tensors and a torch.Generator (state copied alongside)."""
    torch = pytest.importorskip("torch")
    cls = _scheduler_class(form)

    def run(sch, x, gen, timesteps):
        for t in timesteps:
            x = sch.step(torch.tanh(0.3 * sch.scale_model_input(x, t)), t, x, generator=gen)[0]
        return x

    n = 4
    ref = cls(prediction_type="v_prediction")
    ref.set_timesteps(n)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn((2, 4, 8, 8), generator=gen) * ref.init_noise_sigma
    state0 = gen.get_state()
    expected = run(ref, x0, gen, ref.timesteps)
    for k in range(2 * n - 1):
        sch = cls(prediction_type="v_prediction")
        sch.set_timesteps(n)
        gen = torch.Generator().set_state(state0)
        x = run(sch, x0, gen, sch.timesteps[:k])
        twin_sch, twin_x = COPIERS[how]((sch, x))
        twin_gen = torch.Generator().set_state(gen.get_state())
        assert type(twin_sch) is type(sch)
        first = run(sch, x, gen, sch.timesteps[k:])
        second = run(twin_sch, twin_x, twin_gen, twin_sch.timesteps[k:])
        assert torch.equal(expected, first)
        assert torch.equal(expected, second)


@pytest.mark.parametrize(
    ("record", "core"),
    [
        ("kdpm2.schedule.ScheduleConfig", "kdpm2.scheduler.KDPM2AncestralSchedulerCore"),
        ("kdpm2.flow.FlowConfig", "kdpm2.flow.FlowMatchKDPM2AncestralSchedulerCore"),
    ],
)
def test_config_record_fields_and_defaults_are_the_constructor_signature(record, core):
    """If this fails, a constructor argument was added, renamed or given another default
    without its config record (or the reverse): the schedule would be built from other
    settings than the ones the scheduler was constructed with and saves."""
    import dataclasses
    import importlib
    import inspect

    def load(path):
        module, name = path.rsplit(".", 1)
        return getattr(importlib.import_module(module), name)

    fields = {
        f.name: None if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(load(record))
    }
    params = {p.name: p.default for p in inspect.signature(load(core).__init__).parameters.values()}
    del params["self"]
    if "trained_betas" in params:  # a sequence, kept in the record as a tuple
        assert params["trained_betas"] is None
    assert fields == params
