"""Validation of what users pass to every public entry point: one layer, one voice.

Each check raises at the boundary, before any state changes, with the exception type a Python
user expects (``TypeError`` for a wrong type, ``ValueError`` for a wrong value) and a message
that names the argument, what was given, what is accepted and how to fix it. Checks cost no
device work: array checks read metadata only, sigma schedules are checked on the host copy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import _xp, noise
from .schedule import BETA_SCHEDULES, PREDICTION_TYPES, TIMESTEP_SPACINGS

__all__ = [
    "a_type",
    "check_array",
    "check_eta",
    "check_int",
    "check_like",
    "check_noise_level",
    "check_s_noise",
    "check_sigmas",
    "check_step_inputs",
    "is_int",
    "positive",
    "timestep_value",
    "to_scalar",
    "validate_config",
    "validate_flow_config",
]


#: Largest num_train_timesteps (diffusers' models use 1000): the training tables cost O(T).
MAX_TRAIN_TIMESTEPS = 1_000_000
#: Largest num_inference_steps: each step's tables are O(N) floats.
MAX_INFERENCE_STEPS = 100_000
#: Largest |mu| of a flow schedule's resolution-dependent shift (Flux uses about 0.5 to 1.2).
MAX_ABS_MU = 100.0
#: Range of a flow schedule's static shift (SD3 uses 3.0).
SHIFT_RANGE = (1e-3, 1e3)
#: Largest s_noise: more scales the ancestral noise past anything a sampler uses.
MAX_S_NOISE = 100.0
#: Range of a nonzero noise level given to the functional samplers: the split squares it, in
#: float32 for float32 sigmas (squares outside ~1e-38 .. 3e38 underflow or overflow there).
SIGMA_RANGE = (1e-15, 1e15)
_TRAIN_STEPS = f"an integer in [1, {MAX_TRAIN_TIMESTEPS}]"


def check_inference_steps(value: object) -> int:
    """Check ``num_inference_steps``: an integer in ``[1, MAX_INFERENCE_STEPS]``."""
    return check_int(
        "num_inference_steps",
        value,
        lambda v: 1 <= v <= MAX_INFERENCE_STEPS,
        f"an integer in [1, {MAX_INFERENCE_STEPS}] (the number of denoising steps)",
    )


def check_train_timesteps(value: object) -> int:
    """Check ``num_train_timesteps``: an integer in ``[1, MAX_TRAIN_TIMESTEPS]``."""
    return check_int(
        "num_train_timesteps", value, lambda v: 1 <= v <= MAX_TRAIN_TIMESTEPS, _TRAIN_STEPS
    )


def _check_resolvable_beta(name: str, beta: float) -> None:
    # diffusers builds the schedule in float32: a beta below half an ulp of 1 vanishes in
    # 1 - beta, so the first noise level is 0 and every log-sigma lookup gives NaN
    if not np.float32(1) - np.float32(beta) < 1:
        raise ValueError(
            f"{name}={beta!r} is too small: 1 - {name} rounds to 1 in float32 (the precision "
            "the schedule is built in), so the first noise level would be 0; use a value >= "
            "1e-07."
        )


def a_type(value: object) -> str:
    """Name ``value``'s type with its article: ``"a str"``, ``"an int"``."""
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def positive(value: int) -> bool:
    """Return whether an integer count is at least 1 (for :func:`check_int`)."""
    return value >= 1


def is_int(value: object) -> bool:
    """Return whether ``value`` is an integer (a bool is not)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: object, valid: Callable[[int], bool], accepted: str) -> int:
    """Return ``value`` as an int if it is an integer for which ``valid`` holds, else raise.

    ``TypeError`` for a non-integer (a float, a string, a bool), ``ValueError`` for an integer
    out of range; both messages end with ``expected {accepted}.``
    """
    if not is_int(value):
        raise TypeError(f"{name}={value!r} is {a_type(value)}; expected {accepted}.")
    if not valid(int(value)):  # type: ignore[call-overload]
        raise ValueError(f"{name}={value!r} is invalid; expected {accepted}.")
    return int(value)  # type: ignore[call-overload]


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not supported; expected one of {accepted}.")


def _check_number(name: str, value: object, accepted: str) -> None:
    if not _is_real(value):
        raise TypeError(f"{name}={value!r} is {a_type(value)}; expected {accepted}.")


def _check_bool(name: str, value: object) -> None:
    # a JSON string such as "false" is truthy: accepting it would silently flip the option
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name}={value!r} is {a_type(value)}; expected True or False.")


def _check_fraction(name: str, value: object) -> float:
    _check_number(name, value, "a number in (0, 1)")
    if not 0.0 < float(value) < 1.0:  # type: ignore[arg-type]
        raise ValueError(f"{name}={value!r} is outside (0, 1); a beta is a variance fraction.")
    return float(value)  # type: ignore[arg-type]


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Raise for any constructor argument that cannot give a valid schedule.

    Raises
    ------
    ValueError
        A value outside its range, an unknown option, or options that contradict each other.
    TypeError
        A value of the wrong type (a string ``"false"`` for a boolean, say).
    ImportError
        ``use_beta_sigmas=True`` without scipy.
    """
    _check_choice("beta_schedule", cfg["beta_schedule"], BETA_SCHEDULES)
    _check_choice("prediction_type", cfg["prediction_type"], PREDICTION_TYPES)
    _check_choice("timestep_spacing", cfg["timestep_spacing"], TIMESTEP_SPACINGS)
    t = check_train_timesteps(cfg["num_train_timesteps"])
    betas = cfg["trained_betas"]
    if betas is not None:
        arr = _numbers_1d("trained_betas", betas)
        if len(arr) != t:
            raise ValueError(
                f"trained_betas has shape {arr.shape} but num_train_timesteps={t}; pass one "
                f"beta per training timestep (a 1-D sequence of length {t})."
            )
        if not np.all((arr > 0) & (arr < 1)):
            bad = float(arr[~((arr > 0) & (arr < 1))][0])
            raise ValueError(
                f"trained_betas contains {bad!r}, outside (0, 1); every beta must be a variance "
                "fraction strictly between 0 and 1."
            )
        _check_resolvable_beta("min(trained_betas)", float(arr.min()))
    elif cfg["beta_schedule"] != "squaredcos_cap_v2":
        start = _check_fraction("beta_start", cfg["beta_start"])
        end = _check_fraction("beta_end", cfg["beta_end"])
        if start > end:
            raise ValueError(
                f"beta_start={start!r} is larger than beta_end={end!r}; betas must not decrease."
            )
        _check_resolvable_beta("beta_start", start)
    for key in (
        "use_karras_sigmas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "discard_penultimate_sigma",
    ):
        _check_bool(key, cfg[key])
    _check_respacing(cfg)
    check_int(
        "steps_offset",
        cfg["steps_offset"],
        lambda v: 0 <= v <= t,
        f"an integer in [0, {t}] (at most num_train_timesteps; diffusers' models use 0 or 1)",
    )
    check_eta(cfg["eta"])
    check_s_noise(cfg["s_noise"])


def validate_flow_config(cfg: Mapping[str, Any]) -> None:
    """Raise for any flow-scheduler constructor argument that cannot give a valid schedule.

    Raises
    ------
    ValueError
        A value outside its range, an unknown option, or options that contradict each other.
    TypeError
        A value of the wrong type.
    ImportError
        ``use_beta_sigmas=True`` without scipy.
    """
    check_train_timesteps(cfg["num_train_timesteps"])
    lo, hi = SHIFT_RANGE
    _check_number("shift", cfg["shift"], f"a number in [{lo:g}, {hi:g}]")
    if not lo <= float(cfg["shift"]) <= hi:  # also rejects nan
        raise ValueError(
            f"shift={cfg['shift']!r} is invalid; expected a number in [{lo:g}, {hi:g}] (SD3: 3.0)."
        )
    for key in ("base_shift", "max_shift"):
        if cfg[key] is not None:
            _check_number(key, cfg[key], "a finite number or None")
            if not math.isfinite(float(cfg[key])):
                raise ValueError(
                    f"{key}={cfg[key]!r} is invalid; expected a finite number or None."
                )
    for key in ("base_image_seq_len", "max_image_seq_len"):
        check_int(key, cfg[key], positive, "an integer >= 1")
    terminal = cfg["shift_terminal"]
    if terminal is not None:
        _check_number("shift_terminal", terminal, "a number in (0, 1) or None")
        if terminal and not 0.0 < float(terminal) < 1.0:
            raise ValueError(
                f"shift_terminal={terminal!r} is outside (0, 1); it is the last noise level of "
                "the stretched schedule."
            )
    _check_choice("time_shift_type", cfg["time_shift_type"], ("exponential", "linear"))
    for key in (
        "use_dynamic_shifting",
        "invert_sigmas",
        "use_karras_sigmas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
    ):
        _check_bool(key, cfg[key])
    _check_respacing(cfg)
    check_eta(cfg["eta"])
    check_s_noise(cfg["s_noise"])


def _numbers_1d(name: str, values: object) -> np.ndarray:
    """Read a 1-D sequence of real numbers (not strings, not ragged) as a float64 array."""
    accepted = "a 1-D sequence of numbers"
    if isinstance(values, str | bytes | Mapping):
        raise ValueError(f"{name} is {a_type(values)}; expected {accepted}.")
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):  # ragged nested sequences
        raise ValueError(f"{name} is a ragged or mixed sequence; expected {accepted}.") from None
    if arr.ndim != 1 or arr.dtype.kind not in "fiu":
        what = f"dtype {arr.dtype}" if arr.ndim == 1 else f"shape {arr.shape}"
        raise ValueError(f"{name} has {what}; expected {accepted}.")
    return arr.astype(np.float64)


def _check_respacing(cfg: Mapping[str, Any]) -> None:
    chosen = [k for k in ("karras", "exponential", "beta") if cfg[f"use_{k}_sigmas"]]
    if len(chosen) > 1:
        raise ValueError(
            f"use_{chosen[0]}_sigmas and use_{chosen[1]}_sigmas are both True; choose at most "
            "one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas."
        )
    if cfg["use_beta_sigmas"]:
        try:
            import scipy.special  # noqa: F401
        except ImportError:
            raise ImportError(
                "use_beta_sigmas=True needs scipy; install it with `pip install scipy`."
            ) from None


def check_eta(eta: object) -> float:
    """Return ``eta`` as a float if it is a number in ``[0, 1]``, else raise."""
    _check_number("eta", eta, "a number in [0, 1]")
    if not 0.0 <= float(eta) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(
            f"eta={eta!r} is outside [0, 1]; 0 is deterministic DPM2, 1 full ancestral noise."
        )
    return float(eta)  # type: ignore[arg-type]


def check_s_noise(s_noise: object) -> float:
    """Return ``s_noise`` as a float if it is a number in ``[0, MAX_S_NOISE]``, else raise."""
    _check_number("s_noise", s_noise, f"a number in [0, {MAX_S_NOISE:g}]")
    value = float(s_noise)  # type: ignore[arg-type]
    if not 0 <= value <= MAX_S_NOISE:  # also rejects nan
        raise ValueError(
            f"s_noise={s_noise!r} is invalid; expected a number in [0, {MAX_S_NOISE:g}] (it "
            "scales the ancestral noise: 1.0 is the sampler's own, A1111 and ComfyUI use 1.0)."
        )
    return value


def check_array(name: str, value: Any) -> bool:
    """Raise unless ``value`` is a floating-point NumPy array or torch tensor.

    Returns
    -------
    bool
        Whether it is a torch tensor.
    """
    if isinstance(value, np.ndarray):
        floating, torch_in = value.dtype.kind == "f", False
    elif _xp.is_torch(value):
        floating, torch_in = value.is_floating_point(), True
    else:
        raise TypeError(
            f"{name} is {a_type(value)}; expected a numpy.ndarray or a torch.Tensor of "
            "floats (convert it with np.asarray(...) or torch.as_tensor(...))."
        )
    if not floating:
        raise TypeError(
            f"{name} has dtype {value.dtype}, not a floating-point type; convert it, e.g. "
            f"{name}.float() or {name}.astype(np.float32)."
        )
    return torch_in


def check_like(name: str, value: Any, x: Any, what: str, *, returned: bool = True) -> None:
    """Raise unless ``value`` is an array of ``x``'s kind and shape.

    ``returned``: ``value`` is what the callable ``name`` returned (else the argument ``name``).
    """
    same_kind = isinstance(value, np.ndarray) if isinstance(x, np.ndarray) else _xp.is_torch(value)
    verb, must = ("returned", "it must return") if returned else ("is", "it must be")
    of = "" if returned else " of"
    if not same_kind:
        raise TypeError(
            f"{name} {verb} {a_type(value)}; expected {what} of the same type as x "
            f"({type(x).__name__}) and shape {tuple(x.shape)}."
        )
    if tuple(value.shape) != tuple(x.shape):
        raise ValueError(
            f"{name} {verb}{of} shape {tuple(value.shape)} but x has shape {tuple(x.shape)}; "
            f"{must} {what} shaped like x."
        )
    real = value.dtype.kind in "fiub" if isinstance(value, np.ndarray) else not value.is_complex()
    if not real:
        raise TypeError(
            f"{name} {verb}{of} dtype {value.dtype}; {must} {what} of real numbers (for a "
            "complex result, its real part)."
        )


def check_noise_level(name: str, value: Any, batch: int) -> None:
    """Raise unless ``value`` is a noise level: a number >= 0, or one per sample (``(batch,)``).

    Host values (Python and NumPy) are checked to be finite and >= 0; tensors only by shape
    (reading their values could mean a device sync).
    """
    if isinstance(value, np.ndarray) or _xp.is_torch(value):
        if tuple(value.shape) not in ((), (batch,)):
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}; expected a scalar or one noise level "
                f"per sample, shape ({batch},)."
            )
        if _xp.is_torch(value):
            return
        if value.dtype.kind not in "fiu":
            raise TypeError(f"{name} has dtype {value.dtype}; expected real numbers.")
        host = value
    else:
        host = np.asarray(to_scalar(name, value, "a number >= 0 or an array of shape (B,)"))
    if not (np.isfinite(host).all() and (host >= 0).all()):
        raise ValueError(f"{name}={host.tolist()!r} is invalid; noise levels are finite and >= 0.")


def check_sigmas(sigmas: np.ndarray, name: str = "sigmas") -> None:
    """Raise unless ``sigmas`` (a host copy) is a usable schedule.

    Shape ``(n + 1,)`` or ``(n + 1, B)`` with ``n >= 1``; finite, ``>= 0``, non-increasing
    along the first axis, and 0 only at the end. A schedule that stops above 0 is legal (a
    partial run).
    """
    if sigmas.ndim not in (1, 2):
        raise ValueError(
            f"{name} has shape {sigmas.shape}; expected (n + 1,) or (n + 1, B) for per-sample "
            "sigmas."
        )
    if len(sigmas) < 2:
        raise ValueError(
            f"{name} has {len(sigmas)} value(s); expected at least 2 (n + 1 noise levels for n "
            "steps, usually ending in 0)."
        )
    if sigmas.dtype.kind not in "fiu":
        raise TypeError(f"{name} has dtype {sigmas.dtype}; expected real numbers.")
    finite = np.isfinite(sigmas)
    if not finite.all():
        raise ValueError(
            f"{name} contains {sigmas[~finite].flat[0].item()!r}; every noise level must be finite."
        )
    if (sigmas < 0).any():
        raise ValueError(
            f"{name} contains {sigmas[sigmas < 0].flat[0].item()!r}; noise levels must be >= 0."
        )
    lo, hi = SIGMA_RANGE
    extreme = (sigmas != 0) & ((sigmas < lo) | (sigmas > hi))
    if extreme.any():
        raise ValueError(
            f"{name} contains {sigmas[extreme].flat[0].item()!r}; a nonzero noise level must be "
            f"in [{lo:g}, {hi:g}] (the sampler squares it)."
        )
    ended = np.flatnonzero((sigmas[:-1] == 0).reshape(len(sigmas) - 1, -1).any(axis=1))
    if len(ended):
        raise ValueError(
            f"{name} reaches 0 at index {int(ended[0])} but goes on; a schedule ends at its "
            "first 0 (only the last noise level may be 0)."
        )
    rising = np.flatnonzero((np.diff(sigmas, axis=0) > 0).reshape(len(sigmas) - 1, -1).any(axis=1))
    if len(rising):
        i = int(rising[0])
        raise ValueError(
            f"{name} increases at index {i} ({sigmas[i].tolist()!r} -> "
            f"{sigmas[i + 1].tolist()!r}); a schedule goes from high noise to low, so it must "
            "not increase."
        )


def to_scalar(name: str, value: Any, accepted: str) -> float:
    """Read a Python/NumPy number, a 0-d array or a 0-d tensor as a float, else raise TypeError."""
    if _is_real(value) or (isinstance(value, np.generic) and value.dtype.kind in "fiu"):
        return float(value)
    if (isinstance(value, np.ndarray) or _xp.is_torch(value)) and tuple(value.shape) == ():
        return _xp.to_float(value)
    raise TypeError(f"{name}={value!r} is {a_type(value)}; expected {accepted}.")


def check_step_inputs(model_output: Any, sample: Any, generator: Any) -> None:
    """Raise for ``step`` inputs of the wrong kind, dtype or shape (metadata only: no sync).

    Raises
    ------
    TypeError
        Not both NumPy arrays or both tensors, a non-float sample, a wrong kind of generator.
    ValueError
        Shapes that differ, or a list of generators whose length is not the batch size.
    """
    torch = _xp.torch_module()
    if (  # a pipeline's call, every check below in one expression (about 1 us less per call)
        torch is not None
        and type(sample) is torch.Tensor
        and type(model_output) is torch.Tensor
        and sample.is_floating_point()
        and not model_output.is_complex()
        and model_output.shape == sample.shape
        and (generator is None or type(generator) is torch.Generator)
    ):
        return
    if isinstance(sample, np.ndarray):
        torch_in, ok = False, isinstance(model_output, np.ndarray)
    else:
        torch_in = torch is not None and isinstance(sample, torch.Tensor)
        ok = torch is not None and torch_in and isinstance(model_output, torch.Tensor)
    if not ok:
        raise TypeError(
            f"model_output is {a_type(model_output)} and sample is "
            f"{a_type(sample)}; both must be torch tensors or both NumPy arrays."
        )
    floating = sample.is_floating_point() if torch_in else sample.dtype.kind == "f"  # pyright: ignore[reportAttributeAccessIssue]
    if not floating:
        raise TypeError(
            f"sample has dtype {sample.dtype}, not a floating-point type; convert it, e.g. "
            "sample.float() or sample.astype(np.float32)."
        )
    if model_output.is_complex() if torch_in else model_output.dtype.kind == "c":
        raise TypeError(
            f"model_output has dtype {model_output.dtype}, a complex type; a model's output "
            "is real: pass its real part (model_output.real) if the imaginary part is 0."
        )
    if model_output.shape != sample.shape:
        raise ValueError(
            f"model_output has shape {tuple(model_output.shape)} but sample has shape "
            f"{tuple(sample.shape)}; they must be equal."
        )
    if generator is not None:
        noise.check_generator(generator, sample)


def timestep_value(timestep: Any) -> float:
    """Read a timestep given to the scheduler: a number, or a one-element array or tensor."""
    accepted = "a number or a one-element tensor from scheduler.timesteps"
    if isinstance(timestep, np.ndarray) or _xp.is_torch(timestep):
        if int(np.prod(timestep.shape)) != 1:
            raise ValueError(
                f"timestep has shape {tuple(timestep.shape)}; expected one timestep ({accepted})."
            )
        return _xp.to_float(timestep)
    return to_scalar("timestep", timestep, accepted)


# --------------------------------------------------------------- the functional API's checks
def check_steps(n: Any) -> int:
    """Check a step count ``n >= 1`` of the sigma helpers."""
    return check_int("n", n, positive, "an integer >= 1 (the number of steps)")


def check_sigma_range(n: Any, sigma_min: Any, sigma_max: Any) -> tuple[float, float]:
    """Check the sigma helpers' arguments; return the bounds as floats (0-d tensors accepted)."""
    check_steps(n)
    accepted = "a number (a Python or NumPy scalar, or a 0-d tensor)"
    lo, hi = (
        to_scalar("sigma_min", sigma_min, accepted),
        to_scalar("sigma_max", sigma_max, accepted),
    )
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(
            f"sigma_min={lo!r}, sigma_max={hi!r} is not a valid range; "
            "expected 0 < sigma_min <= sigma_max < inf."
        )
    return lo, hi


def config_of(config: Any, name: str) -> Mapping[str, Any]:
    """Return a config mapping, or the ``.config`` of a scheduler; else raise TypeError."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        config = getattr(config, "config", config)
    if not isinstance(config, Mapping):
        raise TypeError(
            f"{name} is {a_type(config)}; expected a scheduler config (a mapping) or a "
            "scheduler (its .config is used)."
        )
    return config


def check_step_args(
    x: Any,
    denoised: Any,
    denoised_mid_fn: Any,
    sigma: Any,
    sigma_next: Any,
    noise: Any,
    eta: Any,
    s_noise: Any,
    *,
    max_sigma: float,
) -> tuple[float, float]:
    """Check a public step's inputs (metadata, and the values of host sigmas).

    Returns ``eta`` and ``s_noise`` as floats. ``max_sigma`` is the family's largest noise
    level (1 for a rectified flow).
    """
    check_array("x", x)
    check_like("denoised", denoised, x, "a denoised estimate", returned=False)
    if not callable(denoised_mid_fn):
        raise TypeError(
            f"denoised_mid_fn is {a_type(denoised_mid_fn)}; expected a callable "
            "denoised_mid_fn(x_mid, sigma_mid) -> denoised."
        )
    batch = x.shape[0] if x.ndim else 1
    check_noise_level("sigma", sigma, batch)
    check_noise_level("sigma_next", sigma_next, batch)
    if not (_xp.is_torch(sigma) or _xp.is_torch(sigma_next)):  # host values: no device read
        s, s_next = np.asarray(sigma, dtype=np.float64), np.asarray(sigma_next, dtype=np.float64)
        if not (s > 0).all() or (s_next > s).any() or (s > max_sigma).any():
            bound = "sigma > 0" if max_sigma == math.inf else "0 < sigma <= 1 (a flow's levels)"
            raise ValueError(
                f"sigma={s.tolist()!r}, sigma_next={s_next.tolist()!r} is not a step; expected "
                f"0 <= sigma_next <= sigma and {bound}."
            )
    if noise is not None:
        check_like("noise", noise, x, "standard normal noise", returned=False)
    return check_eta(eta), check_s_noise(s_noise)


def _host_sigmas(sigmas: Any) -> np.ndarray:
    """Return the host copy of a schedule, to check once there (no device work per step)."""
    if _xp.is_torch(sigmas):
        return sigmas.detach().cpu().numpy()
    if isinstance(sigmas, str | bytes) or sigmas is None:
        raise TypeError(
            f"sigmas is {a_type(sigmas)}; expected an array of noise levels, shape "
            "(n + 1,) or (n + 1, B)."
        )
    try:
        return np.asarray(sigmas)
    except ValueError:  # ragged nested sequences
        raise ValueError(
            "sigmas is a ragged sequence; expected an array of noise levels, shape (n + 1,) or "
            "(n + 1, B)."
        ) from None


def check_sampler_args(
    model: Any,
    x: Any,
    sigmas: Any,
    extra_args: Any,
    callback: Any,
    eta: Any,
    s_noise: Any,
    noise_sampler: Any,
    *,
    max_sigma: float,
) -> tuple[np.ndarray, dict[str, Any], float, float]:
    """Check a functional sampler's arguments (see :func:`kdpm2.sample_dpm_2_ancestral`).

    Returns the host copy of the sigmas, the model's keyword arguments, ``eta`` and
    ``s_noise``. ``max_sigma`` is the family's largest noise level (1 for a rectified flow).
    """
    check_array("x", x)
    if x.ndim == 0:
        raise ValueError(
            "x is a 0-d array; expected a batch of shape (B, ...), e.g. x[None] for one sample."
        )
    eta, s_noise = check_eta(eta), check_s_noise(s_noise)
    for name, fn in (("model", model), ("noise_sampler", noise_sampler), ("callback", callback)):
        if (fn is not None or name == "model") and not callable(fn):
            raise TypeError(f"{name} is {a_type(fn)}; expected a callable.")
    if extra_args is not None and not isinstance(extra_args, Mapping):
        raise TypeError(
            f"extra_args is {a_type(extra_args)}; expected a mapping of keyword "
            "arguments for the model."
        )
    host = _host_sigmas(sigmas)
    if host.ndim == 2 and host.shape[1] != x.shape[0]:
        hint = (
            " (this one has a row per sample: pass sigmas.T)" if host.shape[0] == x.shape[0] else ""
        )
        raise ValueError(
            f"sigmas has shape {host.shape} but x has {x.shape[0]} samples; a per-sample schedule "
            f"has shape (n + 1, B), one column per sample{hint}."
        )
    check_sigmas(host)
    if (host > max_sigma).any():
        raise ValueError(
            f"sigmas contains {host[host > max_sigma].flat[0].item()!r}; a flow model's noise "
            "levels are in [0, 1] (x_s = (1 - s) * x0 + s * noise). For a diffusion model's "
            "sigmas use sample_dpm_2_ancestral."
        )
    return host, {} if extra_args is None else dict(extra_args), eta, s_noise


# ------------------------------------------------------------------ the flow scheduler's checks
def check_flow_levels(s: np.ndarray, source: str) -> None:
    """Raise unless the first-order noise levels are a flow schedule: in (0, 1], non-increasing."""
    bad = ~(np.isfinite(s) & (s > 0) & (s <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{source} gives the noise level {float(s[i])!r} at index {i}; a flow schedule's "
            "noise levels are in (0, 1] (the final 0 is appended by the scheduler). Check the "
            "sigmas, mu, shift and shift_terminal you pass."
        )
    rising = np.flatnonzero(np.diff(s) > 0)
    if len(rising):
        i = int(rising[0])
        raise ValueError(
            f"{source} increases at index {i} ({float(s[i])!r} -> {float(s[i + 1])!r}); noise "
            "levels go from high to low, so they must not increase."
        )


def flow_levels_of(name: str, values: Any) -> np.ndarray:
    """Read custom ``sigmas``/``timesteps`` (a sequence, array or tensor) as a 1-D float array."""
    if _xp.is_torch(values):
        values = values.detach().cpu().numpy()
    if isinstance(values, str | bytes) or np.ndim(values) != 1:
        raise ValueError(
            f"{name} is {a_type(values)} of shape {np.shape(values)}; expected a 1-D sequence of "
            "numbers, one per step."
        )
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu" or len(arr) == 0:
        raise ValueError(
            f"{name}={values!r} is invalid; expected a non-empty 1-D sequence of numbers."
        )
    if not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)][0].item()
        raise ValueError(f"{name} contains {bad!r}; expected finite numbers, one per step.")
    return arr


def reject_unexpected(method: str, kwargs: Mapping[str, Any], config_keys: Sequence[str]) -> None:
    """Raise a TypeError for keyword arguments ``method`` does not take, with the way out.

    A config key passed per call (``step(..., eta=0.0)``, as some samplers take it) is named
    as one, with how to set it.
    """
    if not kwargs:
        return
    name = next(iter(kwargs))
    if name in config_keys:
        hint = (
            f"{name} is a config key of this scheduler, fixed for its loops: construct it with "
            f"{name}=... or use Scheduler.from_config(scheduler.config, {name}=...)"
        )
    else:
        hint = f"see help(scheduler.{method}) for the arguments it takes"
    raise TypeError(f"{method}() got an unexpected keyword argument {name!r}; {hint}.")
