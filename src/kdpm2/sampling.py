"""Functional sampling with k-diffusion's signature, plus sigma-schedule and denoiser helpers."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import _math, _xp
from ._validate import (
    a_type,
    check_like,
    check_sampler_args,
    check_sigma_range,
    check_step_args,
    check_steps,
    config_of,
    to_scalar,
)
from ._xp import A, SigmaLike
from .noise import NoiseSampler, draw
from .schedule import (
    ScheduleConfig,
    exponential_sigmas,
    karras_sigmas,
    make_schedule,
    sigma_to_t,
    train_schedule_from_config,
)

__all__ = [
    "Callback",
    "Denoiser",
    "denoiser_from_network",
    "dpm2_ancestral_step",
    "flow_dpm2_ancestral_step",
    "get_sigmas_exponential",
    "get_sigmas_from_config",
    "get_sigmas_karras",
    "sample_dpm_2_ancestral",
    "sample_dpm_2_ancestral_rf",
]


class Denoiser(Protocol):
    """k-diffusion's model: ``model(x, sigma, **extra_args) -> denoised``.

    ``x`` has shape ``(B, ...)``; ``sigma`` has shape ``(B,)`` (one noise level per sample);
    the result is the estimate of the clean sample, shaped like ``x``.
    """

    def __call__(self, x: Any, sigma: Any, **kwargs: Any) -> Any:
        """Return the denoised estimate of ``x`` at noise levels ``sigma``."""
        ...


class Callback(Protocol):
    """Called once per step with a dict: ``x, i, sigma, sigma_hat, denoised``."""

    def __call__(self, info: dict[str, Any]) -> Any:
        """Receive one step's values."""
        ...


def _append_zero(sigmas: np.ndarray) -> np.ndarray:
    return np.concatenate([sigmas, [0.0]])


def _torch_for(device: Any) -> Any:
    """Return torch if the sigmas are wanted as a tensor on ``device``, else ``None``.

    ``device="cpu"`` without torch installed means the NumPy array.
    """
    if device is None:
        return None
    try:
        import torch
    except ImportError:
        if str(device) == "cpu":
            return None
        raise ImportError(
            f"device={device!r} needs torch; install it, or leave device out (or 'cpu') for a "
            "NumPy array."
        ) from None
    return torch


def _to_device(sigmas: np.ndarray, device: Any) -> Any:
    """Return a fresh float64 NumPy array, or, given a device, k-diffusion's float32 tensor.

    ``device="cpu"`` without torch installed gives the NumPy array.
    """
    torch = _torch_for(device)
    if torch is None:
        return np.array(sigmas, dtype=np.float64)
    return torch.tensor(sigmas, dtype=torch.float32).to(device)


def get_sigmas_karras(
    n: int,
    sigma_min: float,
    sigma_max: float,
    rho: float = 7.0,
    device: Any = None,
    *,
    discard_penultimate_sigma: bool = False,
) -> Any:
    """Return Karras et al. (2022, eq. 5) noise levels, ``n`` of them then ``0``.

    Parameters
    ----------
    n : int
        Number of steps (``n >= 1``).
    sigma_min, sigma_max : float
        Range, ``0 < sigma_min <= sigma_max``.
    rho : float
        Curvature; 7 in the paper.
    device : str or torch.device, optional
        If given (or if a bound is a tensor: its device), a float32 torch tensor there, as
        k-diffusion returns; else a fresh float64 NumPy array. ``"cpu"`` without torch
        installed also gives the NumPy array.
    discard_penultimate_sigma : bool
        Build ``n + 1`` levels and drop the last non-zero one (A1111 / ComfyUI for DPM2).

    Returns
    -------
    array of shape ``(n + 1,)``, decreasing, ending in 0.

    Examples
    --------
    >>> get_sigmas_karras(3, 0.1, 10.0).round(4).tolist()
    [10.0, 1.4507, 0.1, 0.0]
    """
    lo, hi = check_sigma_range(n, sigma_min, sigma_max)
    rho = to_scalar("rho", rho, "a finite number > 0")
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho={rho!r} is invalid; expected a finite number > 0 (7 in the paper).")
    m = n + 1 if discard_penultimate_sigma else n
    sigmas = karras_sigmas(lo, hi, m, rho)
    if not np.isfinite(sigmas).all():
        raise ValueError(
            f"rho={rho!r} is too small for sigma_max={hi!r}: sigma_max ** (1 / rho) overflows; "
            "use a larger rho (7 in the paper)."
        )
    device = _device_of(device, sigma_min, sigma_max)
    torch = _torch_for(device)
    if torch is not None:  # k-diffusion's float32 tensor, computed as k-diffusion does
        ramp = torch.linspace(0, 1, m, device=device)
        min_inv_rho, max_inv_rho = lo ** (1 / rho), hi ** (1 / rho)
        levels = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
        return torch.cat([levels[:n], levels.new_zeros([1])])
    return _append_zero(sigmas[:n])


def get_sigmas_exponential(
    n: int,
    sigma_min: float,
    sigma_max: float,
    device: Any = None,
    *,
    discard_penultimate_sigma: bool = False,
) -> Any:
    """Return ``n`` log-uniformly spaced noise levels from ``sigma_max`` to ``sigma_min``, then 0.

    See :func:`get_sigmas_karras` for ``device``, ``discard_penultimate_sigma`` and the result.

    Examples
    --------
    >>> get_sigmas_exponential(3, 0.1, 10.0).round(4).tolist()
    [10.0, 1.0, 0.1, 0.0]
    """
    lo, hi = check_sigma_range(n, sigma_min, sigma_max)
    m = n + 1 if discard_penultimate_sigma else n
    device = _device_of(device, sigma_min, sigma_max)
    torch = _torch_for(device)
    if torch is not None:  # k-diffusion's float32 tensor, computed as k-diffusion does
        levels = torch.linspace(math.log(hi), math.log(lo), m, device=device).exp()
        return torch.cat([levels[:n], levels.new_zeros([1])])
    return _append_zero(exponential_sigmas(lo, hi, m)[:n])


def get_sigmas_from_config(config: Any, n: int, device: Any = None) -> Any:
    """Return the base noise levels of a scheduler config for ``n`` steps (``n + 1`` values).

    The same sigmas ``KDPM2AncestralDiscreteScheduler`` steps through, honouring
    ``use_karras_sigmas``, spacing and ``discard_penultimate_sigma``. ``config`` is a config
    mapping or a scheduler (its ``.config`` is read).

    Examples
    --------
    >>> get_sigmas_from_config({}, 2).round(3).tolist()
    [25.146, 0.029, 0.0]
    """
    check_steps(n)
    return _to_device(make_schedule(config_of(config, "config"), n).sigmas, device)


def _device_of(device: Any, *bounds: Any) -> Any:
    """Return the device for the sigmas: the one given, else a tensor bound's, else ``None``.

    k-diffusion users pass tensor bounds and expect a tensor back; ``None`` means NumPy.
    """
    if device is None:
        for bound in bounds:
            if _xp.is_torch(bound):
                return bound.device
    return device


def denoiser_from_network(
    network: Callable[..., Any],
    config: Mapping[str, Any] | None = None,
    prediction_type: str | None = None,
) -> Denoiser:
    """Wrap a discrete-time network (diffusers-style) as a k-diffusion denoiser.

    The wrapper scales the input by ``1 / sqrt(sigma**2 + 1)``, maps each sigma to a
    (fractional) training timestep by log-sigma interpolation, calls
    ``network(x_in, t, **extra_args)`` and turns its output into ``x0``.

    Parameters
    ----------
    network : callable
        ``network(x_in, t, **kwargs) -> output``, with ``t`` of shape ``(B,)``.
    config : Mapping, optional
        A scheduler config (for the training schedule and ``prediction_type``).
    prediction_type : {"epsilon", "v_prediction", "sample"}, optional
        Overrides the config's.

    Returns
    -------
    Denoiser
    """
    if not callable(network):
        raise TypeError(
            f"network is {a_type(network)}; expected a callable "
            "network(x_in, t, **kwargs) -> output."
        )
    cfg = ScheduleConfig.from_mapping(config_of(config, "config"))
    ptype = prediction_type or cfg.prediction_type
    train = train_schedule_from_config(cfg)

    def denoise(x: Any, sigma: Any, **kwargs: Any) -> Any:
        host = np.asarray(sigma.detach().cpu() if _xp.is_torch(sigma) else sigma, np.float64)
        t = sigma_to_t(host, train.log_sigmas)
        scale = _xp.append_dims(_xp.like(1.0 / np.sqrt(host**2 + 1.0), x), x.ndim)
        t_in = _xp.like(t, x) if _xp.is_torch(x) else t.astype(x.dtype)
        out = network(x * scale, t_in, **kwargs)
        # diffusers' models return an output object (UNet2DConditionOutput) or a tuple
        out = getattr(out, "sample", out)
        if isinstance(out, tuple | list):
            out = out[0]
        return _math.predict_x0(out, x, _xp.like(host, x), ptype)

    return denoise


def dpm2_ancestral_step(
    x: A,
    denoised: A,
    denoised_mid_fn: Callable[[A, Any], A],
    sigma: SigmaLike,
    sigma_next: SigmaLike,
    noise: A | None,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> A:
    """Check the inputs, then take :func:`kdpm2._math.dpm2_ancestral_step_unchecked` (see there).

    One full DPM2-ancestral step ``sigma -> sigma_next`` for a batch whose samples may sit at
    different noise levels (``sigma``, ``sigma_next`` of shape ``(B,)``). The checks read
    metadata only (and the values of host sigmas), so they cost no device work.

    Raises
    ------
    TypeError
        ``x``, ``denoised`` or ``noise`` is not an array of ``x``'s kind;
        ``denoised_mid_fn`` is not callable; a noise level or ``eta``/``s_noise`` is not a
        number.
    ValueError
        Shapes that differ from ``x``'s, noise levels that are negative or not finite, or
        ``eta``/``s_noise`` out of range.

    Examples
    --------
    >>> x = np.array([[1.0], [1.0]])
    >>> step = dpm2_ancestral_step(
    ...     x, x * 0, lambda xm, s: xm * 0, np.array([1.0, 2.0]), np.array([0.5, 1.0]), None, eta=0
    ... )
    >>> step.ravel().tolist()
    [0.5, 0.5]
    """
    return _checked_step(
        DIFFUSION, x, denoised, denoised_mid_fn, sigma, sigma_next, noise, eta, s_noise
    )


def flow_dpm2_ancestral_step(
    x: A,
    denoised: A,
    denoised_mid_fn: Callable[[A, Any], A],
    sigma: SigmaLike,
    sigma_next: SigmaLike,
    noise: A | None,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> A:
    """Check the inputs, then take :func:`kdpm2._math.flow_dpm2_ancestral_step_unchecked`.

    The rectified-flow counterpart of :func:`dpm2_ancestral_step`, with the same checks and
    noise levels in ``[0, 1]``.

    Examples
    --------
    >>> x = np.array([[0.8], [0.5]])
    >>> step = flow_dpm2_ancestral_step(
    ...     x, x * 0, lambda xm, s: xm * 0, np.array([0.8, 0.5]), np.array([0.4, 0.0]), None, eta=0
    ... )
    >>> step.ravel().round(12).tolist()
    [0.4, 0.0]
    """
    return _checked_step(
        RECTIFIED_FLOW, x, denoised, denoised_mid_fn, sigma, sigma_next, noise, eta, s_noise
    )


def _progress(n: int, disable: bool | None) -> Any:
    if disable:
        return range(n)
    try:
        from tqdm.auto import trange
    except ImportError:
        return range(n)
    return trange(n, disable=disable)


def _default_noise_sampler(x: Any) -> NoiseSampler:
    if _xp.is_torch(x):
        torch = _xp.torch_module()
        assert torch is not None
        return lambda sigma, sigma_next: torch.randn_like(x)
    rng = np.random.default_rng()
    return lambda sigma, sigma_next: draw(x, rng)


def sample_dpm_2_ancestral(
    model: Denoiser,
    x: A,
    sigmas: Any,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> A:
    """Sample with DPM-Solver-2 steps and ancestral noise (k-diffusion's signature and numbers).

    Matches k-diffusion 0.1.1.post1 ``sample_dpm_2_ancestral`` (to float32 rounding: on
    tensors each ``x + y * a`` is one fused ``torch.add``): each step is
    :func:`kdpm2.dpm2_ancestral_step` with the model called at ``sigmas[i]``; where
    ``sigma_down`` is 0 an Euler step follows, else a second call at the log midpoint, the
    midpoint step to ``sigma_down`` and ``noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise *
    sigma_up`` of noise (drawn even when ``eta == 0``, as k-diffusion does). The ancestral
    split is computed in the sigmas' dtype, as k-diffusion does.

    Parameters
    ----------
    model : Denoiser
        ``model(x, sigma * ones(B), **extra_args) -> denoised``.
    x : numpy.ndarray or torch.Tensor
        Initial sample at noise level ``sigmas[0]``, shape ``(B, ...)``.
    sigmas : array
        Shape ``(n + 1,)``, decreasing, usually ending in 0; or ``(n + 1, B)`` for a per-sample
        schedule (each column one sample's noise levels).
    extra_args : Mapping, optional
        Passed to ``model`` as keyword arguments.
    callback : Callback, optional
        Receives ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` once per step.
    disable : bool, optional
        Switch off the progress bar (shown by tqdm, if installed, on a terminal).
    eta : float
        Ancestral noise amount (0: deterministic DPM2).
    s_noise : float
        Noise scale.
    noise_sampler : NoiseSampler, optional
        ``noise_sampler(sigma, sigma_next) -> noise``; default: ``torch.randn_like`` for
        tensors, an unseeded ``numpy.random.Generator`` for arrays.

    Returns
    -------
    array
        The final sample, same type, shape and dtype as ``x`` (a model or noise sampler that
        answers in another dtype has its output cast to ``x``'s first; k-diffusion would
        promote instead).

    Raises
    ------
    TypeError
        ``x`` is not a float array or tensor; ``model``, ``noise_sampler`` or ``callback``
        is not callable; ``sigmas`` is not an array of numbers; a callable returned something
        that is not an array of ``x``'s kind.
    ValueError
        ``sigmas`` has fewer than 2 values, a NaN, inf or negative value, or increases; a
        per-sample schedule's column count is not the batch size; ``eta`` is outside [0, 1]
        or ``s_noise`` negative or not finite; a callable returned the wrong shape.

    Examples
    --------
    >>> import numpy as np
    >>> model = lambda x, sigma: x / (1.0 + sigma[:, None] ** 2)  # N(0, 1) data, exact
    >>> x0 = np.ones((2, 1))
    >>> out = sample_dpm_2_ancestral(model, 10.0 * x0, get_sigmas_karras(8, 0.1, 10.0), eta=0.0)
    >>> out.shape
    (2, 1)
    """
    return _run(
        DIFFUSION, model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler
    )


def sample_dpm_2_ancestral_rf(
    model: Denoiser,
    x: A,
    sigmas: Any,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> A:
    """Sample a rectified-flow model with DPM-Solver-2 steps and ancestral noise.

    The flow variant of :func:`sample_dpm_2_ancestral` (ComfyUI's ``dpm_2_ancestral`` on
    flow models), for ``x_s = (1 - s) * x0 + s * noise`` with noise levels ``s`` in
    ``[0, 1]``: each step is :func:`kdpm2.flow_dpm2_ancestral_step` with the model called at
    ``sigmas[i]``; where ``sigma_down`` is 0 (the step to 0) an Euler step, else a second call
    at the log midpoint, the midpoint step to ``sigma_down``, the rescale by ``(1 -
    sigma_next) / (1 - sigma_down)`` and ``noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise *
    renoise`` of fresh noise (drawn even when ``eta == 0``, where ``renoise`` is 0). With
    ``eta = 0`` it is DPM-Solver-2 on the flow ODE.

    Parameters, returns and errors as for :func:`sample_dpm_2_ancestral`; the model is a
    denoiser: for a network that predicts the velocity ``v = noise - x0``, ``model(x, s) = x -
    s * v(x, s)``. ``sigmas`` must also be ``<= 1`` (a ``ValueError`` names the first that is
    not).

    Examples
    --------
    >>> import numpy as np
    >>> model = lambda x, s: x * 0  # data all at 0: the flow ends at 0 for any noise
    >>> x = np.ones((2, 3))
    >>> sample_dpm_2_ancestral_rf(model, x, np.linspace(1.0, 0.0, 5), disable=True).tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    return _run(
        RECTIFIED_FLOW, model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler
    )


@dataclass(frozen=True, slots=True)
class SamplerFamily:
    """What the diffusion and the rectified-flow samplers do differently; the loop is shared.

    Attributes
    ----------
    split : callable
        ``split(sigma, sigma_next, eta)``, whose first result is ``sigma_down``.
    step : callable
        The unchecked step of :mod:`kdpm2._math`.
    max_sigma : float
        The largest noise level the family takes (1 for a rectified flow).
    """

    split: Callable[..., tuple[Any, ...]]
    step: Callable[..., Any]
    max_sigma: float


DIFFUSION = SamplerFamily(_math.ancestral_split, _math.dpm2_ancestral_step_unchecked, math.inf)
RECTIFIED_FLOW = SamplerFamily(
    _math.flow_ancestral_split, _math.flow_dpm2_ancestral_step_unchecked, 1.0
)


def _checked_step(
    family: SamplerFamily,
    x: Any,
    denoised: Any,
    denoised_mid_fn: Any,
    sigma: Any,
    sigma_next: Any,
    noise: Any,
    eta: Any,
    s_noise: Any,
) -> Any:
    eta, s_noise = check_step_args(
        x, denoised, denoised_mid_fn, sigma, sigma_next, noise, eta, s_noise,
        max_sigma=family.max_sigma,
    )  # fmt: skip
    return family.step(
        x, denoised, denoised_mid_fn, sigma, sigma_next, noise, eta=eta, s_noise=s_noise
    )


def _run(
    family: SamplerFamily,
    model: Denoiser,
    x: Any,
    sigmas: Any,
    extra_args: Mapping[str, Any] | None,
    callback: Callback | None,
    disable: bool | None,
    eta: Any,
    s_noise: Any,
    noise_sampler: NoiseSampler | None,
) -> Any:
    """Check a sampler's arguments, then run :func:`_loop` (no autograd, as k-diffusion)."""
    host, extra, eta, s_noise = check_sampler_args(
        model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler,
        max_sigma=family.max_sigma,
    )  # fmt: skip
    sampler = _default_noise_sampler(x) if noise_sampler is None else noise_sampler
    args = (family, model, x, sigmas, host, extra, callback, disable, eta, s_noise, sampler)
    if _xp.is_torch(x):
        torch = _xp.torch_module()
        assert torch is not None
        with torch.no_grad():
            return _loop(*args)
    return _loop(*args)


def _loop(
    family: SamplerFamily,
    model: Denoiser,
    x: Any,
    sigmas: Any,
    host: np.ndarray,
    extra: dict[str, Any],
    callback: Callback | None,
    disable: bool | None,
    eta: float,
    s_noise: float,
    sampler: NoiseSampler,
) -> Any:
    per_sample = host.ndim == 2
    if _xp.is_torch(x):
        s_in = x.new_ones([x.shape[0]])
    else:
        s_in = np.ones(x.shape[0], np.result_type(x, host))
    # k-diffusion draws noise for every step that is not a plain Euler step to sigma_down = 0
    sigma_down = family.split(host[:-1], host[1:], eta)[0]
    draws: list[bool] = np.any(
        np.reshape(np.asarray(sigma_down) > 0, (len(host) - 1, -1)), axis=1
    ).tolist()

    x_like = x

    def like_x(name: str, value: Any, what: str) -> Any:
        # a metadata check of what a callable returned, then the dtype policy: x's dtype wins
        check_like(name, value, x_like, what)
        if value.dtype == x_like.dtype:
            return value
        return value.astype(x_like.dtype) if isinstance(value, np.ndarray) else value.to(x.dtype)

    def model_at(x_: Any, sigma: Any) -> Any:
        # sigma: one host value per sample, or a scalar of the sigmas' dtype
        sigma_in = _xp.like(sigma, x_) if per_sample else s_in * float(sigma)
        return like_x("model", model(x_, sigma_in, **extra), "a denoised estimate")

    for i in _progress(len(host) - 1, disable):
        denoised = model(x, _xp.like(host[i], x) if per_sample else sigmas[i] * s_in, **extra)
        denoised = like_x("model", denoised, "a denoised estimate")
        if callback is not None:
            callback(
                {"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised}
            )
        noise = None
        if draws[i]:
            noise = like_x("noise_sampler", sampler(sigmas[i], sigmas[i + 1]), "standard noise")
        x = family.step(
            x, denoised, model_at, host[i], host[i + 1], noise, eta=eta, s_noise=s_noise
        )
    return x
