"""Pure DPM-Solver-2 ancestral step math on NumPy arrays or torch tensors: written once.

Names follow Karras et al. 2022 (Algorithm 2) and k-diffusion. One step from ``sigma`` to
``sigma_next`` (:func:`dpm2_ancestral_step_unchecked`) reads as the paper does::

    sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
    d = to_d(x, sigma, denoised)
    sigma_mid = log_midpoint(sigma, sigma_down)
    x_2 = euler_half_step(x, d, sigma, sigma_mid)          # x + (sigma_mid - sigma) d
    d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid))
    x = midpoint_step(x, d_2, sigma, sigma_down)           # x + (sigma_down - sigma) d_2
    x = add_scaled(x, noise, s_noise * sigma_up)           # fresh noise

The scheduler classes run the same lines split over two model calls (:func:`euler_half_step`
at a step's start, :func:`midpoint_step` at its midpoint), with the levels read from the
schedule's per-step tables; the functional sampler runs them as written.
Rectified-flow models (``x_s = (1 - s) * x0 + s * noise``) take the same deterministic part
(:func:`dpm2_solve_to`) to their own ``sigma_down``, then a rescale and fresh noise
(:func:`flow_ancestral_split`, :func:`flow_dpm2_ancestral_step_unchecked`).

Every function works for NumPy and torch alike, returns the type of ``x`` it was given, and
accepts each noise level as a Python float, a 0-d array (computed in its own dtype, as
k-diffusion does), or one value per sample (shape ``(B,)``, broadcast over the trailing axes
with :func:`kdpm2._xp.append_dims`). Nothing here draws random numbers: noise is an argument.
Array values never drive a Python branch except where a step's ``sigma_down`` is a scalar;
per-sample values branch with ``where``, and the side not taken is computed on a safe
substitute so no NaN or warning leaks out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import _xp
from ._xp import A, SigmaLike, append_dims

__all__ = [
    "add_scaled",
    "ancestral_split",
    "dpm2_ancestral_step_unchecked",
    "dpm2_solve_to",
    "euler_half_step",
    "flow_ancestral_split",
    "flow_dpm2_ancestral_step_unchecked",
    "log_midpoint",
    "midpoint_step",
    "predict_x0",
    "to_d",
]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, float) or getattr(value, "ndim", 0) == 0


def _level_like(sigma: SigmaLike, x: Any) -> Any:
    """Broadcast a noise level over ``x``.

    A scalar becomes a Python float (the sample's dtype wins, and torch reads it without a
    device copy); an array of shape ``(B,)`` takes ``x``'s type, dtype and device. Under
    ``torch.compile`` a 0-d tensor stays one (reading it would break the graph).
    """
    if type(sigma) is float:  # (a NumPy float64 would not be weak: made a float below)
        return sigma
    if isinstance(sigma, float) or getattr(sigma, "ndim", 0) == 0:
        return sigma if _xp.compiling() and _xp.is_torch(sigma) else float(sigma)
    return append_dims(_xp.like(sigma, x), x.ndim)


def ancestral_split(sigma: Any, sigma_next: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """Split a step ``sigma -> sigma_next`` into ``(sigma_down, sigma_up)``.

    ``sigma_up = min(sigma_next, eta * sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) /
    sigma**2))`` and ``sigma_down = sqrt(sigma_next**2 - sigma_up**2)``: the deterministic
    solver goes to ``sigma_down``, and fresh noise of std ``sigma_up`` restores the marginal
    at ``sigma_next`` (Karras et al. 2022, Algorithm 2; k-diffusion's ``eta``). Computed in
    the inputs' own dtype, like k-diffusion. Where ``sigma == 0`` both are 0.

    Parameters
    ----------
    sigma, sigma_next : float or array
        Scalars or arrays of the same shape (e.g. ``(B,)``), ``0 <= sigma_next <= sigma``.
    eta : float
        Ancestral noise amount in ``[0, 1]``; 0 gives ``(sigma_next, 0)``.

    Returns
    -------
    sigma_down, sigma_up
        Python floats for Python-float inputs, else arrays of the inputs' type;
        ``sigma_down**2 + sigma_up**2 == sigma_next**2`` up to rounding.

    Examples
    --------
    >>> ancestral_split(2.0, 1.0, eta=0.0)
    (1.0, 0.0)
    >>> down, up = ancestral_split(2.0, 1.0)
    >>> round(down**2 + up**2, 12)
    1.0
    """
    floats = isinstance(sigma, float | int) and isinstance(sigma_next, float | int)
    if floats:
        sigma, sigma_next = np.float64(sigma), np.float64(sigma_next)
    if not eta:
        down, up = sigma_next, sigma_next * 0
    else:
        positive = sigma > 0
        safe = _xp.where(positive, sigma, sigma * 0 + 1)
        up = _xp.minimum(
            sigma_next, eta * _xp.sqrt(sigma_next**2 * (safe**2 - sigma_next**2) / safe**2)
        )
        up = _xp.where(positive, up, up * 0)
        down = _xp.where(positive, _xp.sqrt(sigma_next**2 - up**2), up * 0)
    if floats:
        return float(down), float(up)
    return down, up


def log_midpoint(sigma: Any, sigma_down: Any) -> Any:
    """Return the DPM-2 midpoint ``exp((log sigma + log sigma_down) / 2)``, 0 if ``sigma_down`` is.

    Computed as k-diffusion and diffusers do (``log``, ``torch.lerp`` at weight 0.5, ``exp``),
    in the inputs' dtype.

    Examples
    --------
    >>> round(log_midpoint(4.0, 1.0), 12)
    2.0
    """
    floats = isinstance(sigma, float | int) and isinstance(sigma_down, float | int)
    if floats:
        sigma, sigma_down = np.float64(sigma), np.float64(sigma_down)
    positive = sigma_down > 0  # implies sigma > 0
    log_s = _xp.log(_xp.where(positive, sigma, sigma * 0 + 1))
    log_d = _xp.log(_xp.where(positive, sigma_down, sigma_down * 0 + 1))
    # torch.lerp(log_s, log_d, 0.5) in its weight >= 0.5 form: end - (end - start) * (1 - w)
    mid = _xp.exp(log_d - (log_d - log_s) * 0.5)
    mid = _xp.where(positive, mid, mid * 0)
    return float(mid) if floats else mid


def to_d(x: A, sigma: SigmaLike, denoised: A) -> A:
    """Return the probability-flow ODE slope ``(x - denoised) / sigma`` (Karras et al. eq. 1).

    Parameters
    ----------
    x, denoised : array
        Shape ``(B, ...)``.
    sigma : float or array of shape ``(B,)``
        Noise level of ``x``, broadcast over trailing axes; must be non-zero.

    Examples
    --------
    >>> to_d(np.array([3.0]), 2.0, np.array([1.0])).tolist()
    [1.0]
    """
    return (x - denoised) / _level_like(sigma, x)


def add_scaled(x: A, y: A, a: SigmaLike, *, in_place: bool = False) -> A:
    """Return ``x + y * a``: an Euler move along slope ``y`` by ``a``, or noise of std ``a``.

    One fused ``torch.add(x, y, alpha=a)`` for tensors with a scalar ``a`` (each element read
    and written once, where ``x + y * a`` runs two kernels; the rounding may differ by an
    ulp). For NumPy arrays of one dtype, ``y * a`` is made and ``x`` added in place into it
    (one temporary instead of two; the same numbers). Inputs are not modified, unless
    ``in_place``.

    Parameters
    ----------
    x, y : array
        Shape ``(B, ...)``, both NumPy or both torch.
    a : float or array of shape ``(B,)``
        Broadcast over the trailing axes.
    in_place : bool
        Add into ``x`` itself (an array the caller made and owns, of the result's dtype) and
        return it: one allocation less.

    Examples
    --------
    >>> add_scaled(np.array([1.0, 2.0]), np.array([2.0, 2.0]), 0.5).tolist()
    [2.0, 3.0]
    """
    scale = _level_like(a, x)
    if in_place:
        if isinstance(x, np.ndarray) or not isinstance(scale, float):
            x += y * scale
            return x
        return x.add_(y, alpha=scale)
    if isinstance(x, np.ndarray):
        if isinstance(y, np.ndarray) and x.dtype == y.dtype and isinstance(scale, float):
            out = y * scale
            out += x
            return out
        return x + y * scale
    if isinstance(scale, float):
        return x.add(y, alpha=scale)
    return x + y * scale


def predict_x0(model_output: A, sample: A, sigma: SigmaLike, prediction_type: str) -> A:
    """Turn a network output into the denoised estimate ``x0`` at noise level ``sigma``.

    ``epsilon``: ``x - sigma * eps`` (one fused kernel on tensors); ``v_prediction``:
    ``-sigma / sqrt(sigma**2 + 1) * v + x / (sigma**2 + 1)`` (Salimans & Ho 2022, in the VE
    convention); ``sample``: the output itself.

    Examples
    --------
    >>> predict_x0(np.ones(2), np.full(2, 3.0), 2.0, "epsilon").tolist()
    [1.0, 1.0]
    """
    if prediction_type == "sample":
        return model_output
    if prediction_type == "epsilon":
        return add_scaled(sample, model_output, -sigma)
    s = _level_like(sigma, sample)
    if prediction_type == "v_prediction":
        return model_output * (-s / (s**2 + 1) ** 0.5) + sample / (s**2 + 1)
    raise ValueError(
        f"prediction_type={prediction_type!r} is not supported; expected one of 'epsilon', "
        "'v_prediction', 'sample'."
    )


def dpm2_ancestral_step_unchecked(
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
    """Advance ``x`` one full DPM2-ancestral step ``sigma -> sigma_next``.

    Karras et al. 2022, Algorithm 2 (second-order midpoint variant) with ancestral noise, as
    k-diffusion's ``sample_dpm_2_ancestral`` takes each step: where ``sigma_down`` is 0 a
    plain Euler step to it, else an Euler half-step to the log midpoint, a second model call
    there and the midpoint step to ``sigma_down``; then ``s_noise * sigma_up`` of ``noise``.
    ``sigma`` and ``sigma_next`` may be arrays of shape ``(B,)`` (samples at different noise
    levels), where the two cases are chosen elementwise.

    Parameters
    ----------
    x : array
        Shape ``(B, ...)``, at noise level ``sigma``.
    denoised : array
        The denoiser's output at ``(x, sigma)``.
    denoised_mid_fn : callable
        ``denoised_mid_fn(x_mid, sigma_mid) -> denoised`` evaluates the model at the midpoint
        (``sigma_mid`` as given: a scalar, or an array of shape ``(B,)``).
    sigma, sigma_next : float, 0-d array or array of shape ``(B,)``
        Current and next noise levels; a 0-d array computes the split in its own dtype.
    noise : array or None
        Standard normal noise shaped like ``x`` (``None`` when no noise is wanted).
    eta, s_noise : float
        Ancestral noise amount and noise scale (k-diffusion's knobs).

    Returns
    -------
    array
        ``x`` at ``sigma_next``, same type, shape and dtype as ``x``.

    Examples
    --------
    The last step (to ``sigma_next = 0``) is one Euler step onto the denoised estimate, with
    no second model call (:func:`kdpm2.dpm2_ancestral_step` shows a per-sample step):

    >>> x = np.array([[3.0]])
    >>> dpm2_ancestral_step_unchecked(x, x * 0 + 1.0, None, 2.0, 0.0, None).tolist()
    [[1.0]]
    """
    sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
    x = dpm2_solve_to(x, denoised, denoised_mid_fn, sigma, sigma_down)
    if noise is not None:
        x = add_scaled(x, noise, sigma_up * s_noise)
    return x


def euler_half_step(x: A, d: A, sigma: SigmaLike, sigma_mid: SigmaLike) -> A:
    """Move ``x`` from ``sigma`` to the midpoint along the slope ``d`` at ``sigma``.

    The first half of a DPM-2 step (the Euler move to the midpoint in the second-order step of
    Karras et al. 2022, Algorithm 2). On a step whose ``sigma_down`` is 0 the whole step is
    this Euler move, with ``sigma_mid = 0``.

    Examples
    --------
    >>> euler_half_step(np.array([3.0]), np.array([1.0]), 2.0, 1.5).tolist()
    [2.5]
    """
    return add_scaled(x, d, sigma_mid - sigma)


def midpoint_step(x: A, d_mid: A, sigma: SigmaLike, sigma_down: SigmaLike) -> A:
    """Move ``x`` from ``sigma`` to ``sigma_down`` along the midpoint's slope ``d_mid``.

    The second half of a DPM-2 step (Karras et al. 2022, Algorithm 2's second-order update in
    its midpoint form, with ``sigma_down`` for the next level): ``x + (sigma_down - sigma)
    d_mid``, from the step's start ``x``, not from the midpoint.

    Examples
    --------
    >>> midpoint_step(np.array([3.0]), np.array([2.0]), 2.0, 1.0).tolist()
    [1.0]
    """
    return add_scaled(x, d_mid, sigma_down - sigma)


def dpm2_solve_to(
    x: A, denoised: A, denoised_mid_fn: Callable[[A, Any], A], sigma: Any, sigma_down: Any
) -> A:
    """Take a step's deterministic part: DPM-Solver-2 from ``sigma`` to ``sigma_down``.

    Where ``sigma_down`` is 0, one Euler step onto the denoised estimate (no second model
    call); else an Euler half-step to the log midpoint, the model there, and the midpoint step
    from ``x`` to ``sigma_down``. The diffusion and the flow steps share it; noise levels of
    shape ``(B,)`` choose the case per sample.
    """
    d = to_d(x, sigma, denoised)
    if _is_scalar(sigma_down):
        if sigma_down == 0:  # the last step: Euler to sigma_down = 0
            return euler_half_step(x, d, sigma, sigma_down)
        sigma_mid = log_midpoint(sigma, sigma_down)
        x_2 = euler_half_step(x, d, sigma, sigma_mid)
        d_2 = to_d(x_2, sigma_mid, denoised_mid_fn(x_2, sigma_mid))
        return midpoint_step(x, d_2, sigma, sigma_down)
    euler = _xp.like(sigma_down, x) <= 0
    # where the Euler branch is taken the midpoint is evaluated at sigma itself, so the
    # model never sees sigma = 0 and the unused branch stays finite
    sigma_mid = _xp.where(sigma_down <= 0, sigma, log_midpoint(sigma, sigma_down))
    x_2 = euler_half_step(x, d, sigma, sigma_mid)
    d_2 = to_d(x_2, sigma_mid, denoised_mid_fn(x_2, sigma_mid))
    return midpoint_step(x, _xp.where(append_dims(euler, x.ndim), d, d_2), sigma, sigma_down)


def flow_ancestral_split(sigma: Any, sigma_next: Any, eta: float = 1.0) -> tuple[Any, Any, Any]:
    """Split a rectified-flow step ``sigma -> sigma_next`` into ``(sigma_down, renoise, scale)``.

    For the flow interpolation ``x_s = (1 - s) * x0 + s * noise`` (``0 <= s <= 1``): the
    deterministic solver goes to ``sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) *
    eta)``; multiplying by ``scale = (1 - sigma_next) / (1 - sigma_down)`` and adding fresh
    noise of std ``renoise = sqrt(sigma_next**2 - (sigma_down * scale)**2)`` restores the
    marginal at ``sigma_next`` (ComfyUI's flow variant of DPM2 ancestral). ``renoise`` is
    computed as ``sqrt((sigma_next - sigma_down) * (sigma_next * (1 - sigma_down) + sigma_down
    * (1 - sigma_next))) / (1 - sigma_down)``, the same value without cancellation: exactly 0
    at ``eta = 0`` (where the textbook form can take the root of a value just below 0, a NaN
    in float32). Where ``sigma == 0`` or ``sigma_down == 1`` (no step) the split is
    ``(sigma_next, 0, 1)``. Computed in the inputs' dtype.

    Parameters
    ----------
    sigma, sigma_next : float or array
        ``0 <= sigma_next <= sigma <= 1``; scalars or arrays of one shape (e.g. ``(B,)``).
    eta : float
        Ancestral noise amount in ``[0, 1]``; 0 gives ``(sigma_next, 0, 1)``.

    Returns
    -------
    sigma_down, renoise, scale
        Python floats for Python-number inputs, else arrays of the inputs' type.

    Examples
    --------
    >>> flow_ancestral_split(0.8, 0.4, eta=0.0)
    (0.4, 0.0, 1.0)
    >>> down, renoise, scale = flow_ancestral_split(0.8, 0.4)
    >>> down, round(scale, 12), round((down * scale) ** 2 + renoise**2, 12)  # marginal kept
    (0.2, 0.75, 0.16)
    """
    floats = isinstance(sigma, float | int) and isinstance(sigma_next, float | int)
    if floats:
        sigma, sigma_next = np.float64(sigma), np.float64(sigma_next)
    stepping = sigma > 0
    safe = _xp.where(stepping, sigma, sigma * 0 + 1)
    down = sigma_next * (1 + (sigma_next / safe - 1) * eta) if eta else sigma_next
    down = _xp.where(stepping, down, sigma_next)
    alpha_next, alpha_down = 1 - sigma_next, 1 - down
    moving = alpha_down > 0
    safe_alpha = _xp.where(moving, alpha_down, alpha_down * 0 + 1)
    gap = sigma_next - down  # >= 0 in exact arithmetic; exactly 0 at eta = 0
    gap = _xp.where(gap > 0, gap, gap * 0)
    renoise = _xp.sqrt(gap * (sigma_next * alpha_down + down * alpha_next)) / safe_alpha
    renoise = _xp.where(moving, renoise, renoise * 0)
    scale = _xp.where(moving, alpha_next / safe_alpha, alpha_next * 0 + 1)
    if floats:
        return float(down), float(renoise), float(scale)
    return down, renoise, scale


def flow_dpm2_ancestral_step_unchecked(
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
    """Advance ``x`` one DPM2-ancestral step ``sigma -> sigma_next`` of a rectified-flow model.

    The same midpoint solve as :func:`dpm2_ancestral_step_unchecked`, to the flow ``sigma_down`` of
    :func:`flow_ancestral_split`; then ``x * scale + noise * s_noise * renoise``. For a flow
    model that predicts the velocity ``v``, the denoised estimate is ``x - sigma * v``.
    Parameters and result as for :func:`dpm2_ancestral_step_unchecked`; noise levels in ``[0, 1]``.

    Examples
    --------
    With ``eta = 0`` and a model that knows ``x0 = 0``, each step shrinks ``x`` by
    ``sigma_next / sigma``:

    >>> x = np.array([[0.8]])
    >>> zero = lambda xm, s: xm * 0
    >>> flow_dpm2_ancestral_step_unchecked(x, x * 0, zero, 0.8, 0.4, None, eta=0).tolist()
    [[0.4]]
    """
    sigma_down, renoise, scale = flow_ancestral_split(sigma, sigma_next, eta)
    x = dpm2_solve_to(x, denoised, denoised_mid_fn, sigma, sigma_down)
    if not (_is_scalar(scale) and scale == 1):
        x = x * _level_like(scale, x)
    if noise is not None:
        x = add_scaled(x, noise, renoise * s_noise)
    return x
