"""Pure DPM-Solver-2 ancestral step math on NumPy arrays or torch tensors.

Names follow Karras et al. 2022 (Algorithm 2) and k-diffusion. Every function works for
NumPy and torch alike, returns the type of ``x`` it was given, and accepts each noise level
as a Python float, a 0-d array, or one value per sample (shape ``(B,)``, broadcast over the
trailing axes with :func:`kdpm2._xp.append_dims`). Nothing here draws random numbers: noise
is an argument. Nothing branches in Python on array values: ``where`` does it elementwise,
and the side not taken is computed on a safe substitute so no NaN or warning leaks out.
"""

from __future__ import annotations

from typing import Any

from . import _xp
from ._xp import A, SigmaLike, append_dims

__all__ = [
    "ancestral_split",
    "dpm2_ancestral_step",
    "first_half",
    "log_midpoint",
    "predict_x0",
    "second_half",
    "to_d",
]


def _sig(sigma: SigmaLike, x: Any) -> Any:
    """Broadcast a noise level over ``x`` in ``x``'s dtype (the sample's dtype wins)."""
    if isinstance(sigma, float | int):
        return float(sigma)
    return append_dims(_xp.like(sigma, x), x.ndim)


def ancestral_split(sigma: Any, sigma_next: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """Split a step ``sigma -> sigma_next`` into ``(sigma_down, sigma_up)``.

    ``sigma_up = min(sigma_next, eta * sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) /
    sigma**2))`` and ``sigma_down = sqrt(sigma_next**2 - sigma_up**2)``: the deterministic
    solver goes to ``sigma_down``, and fresh noise of std ``sigma_up`` restores the marginal
    at ``sigma_next`` (Karras et al. 2022, Algorithm 2; k-diffusion's ``eta``). Computed in
    the arrays' own dtype, like k-diffusion. Where ``sigma == 0`` both are 0.

    Parameters
    ----------
    sigma, sigma_next : float or array
        Scalars or arrays of the same shape (e.g. ``(B,)``), ``0 <= sigma_next <= sigma``.
    eta : float
        Ancestral noise amount; 0 gives ``(sigma_next, 0)``.

    Returns
    -------
    sigma_down, sigma_up
        Same type as the inputs; ``sigma_down**2 + sigma_up**2 == sigma_next**2``.

    Examples
    --------
    >>> ancestral_split(2.0, 1.0, eta=0.0)
    (1.0, 0.0)
    >>> down, up = ancestral_split(2.0, 1.0)
    >>> round(down**2 + up**2, 12)
    1.0
    """
    if isinstance(sigma, float | int) and isinstance(sigma_next, float | int):
        if not eta:
            return float(sigma_next), 0.0
        if sigma <= 0:
            return 0.0, 0.0
        up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
        return (sigma_next**2 - up**2) ** 0.5, up
    if not eta:
        return sigma_next, sigma_next * 0
    positive = sigma > 0
    safe = _xp.where(positive, sigma, sigma * 0 + 1)
    up = _xp.minimum(
        sigma_next, eta * _xp.sqrt(sigma_next**2 * (safe**2 - sigma_next**2) / safe**2)
    )
    up = _xp.where(positive, up, up * 0)
    down = _xp.where(positive, _xp.sqrt(sigma_next**2 - up**2), up * 0)
    return down, up


def log_midpoint(sigma: Any, sigma_down: Any) -> Any:
    """Return the geometric mean ``exp((log sigma + log sigma_down) / 2)`` (the DPM-2 midpoint).

    Computed as k-diffusion does (``log``, lerp at weight 0.5, ``exp``) for arrays; 0 where
    ``sigma_down == 0``.

    Examples
    --------
    >>> round(log_midpoint(4.0, 1.0), 12)
    2.0
    """
    if isinstance(sigma, float | int) and isinstance(sigma_down, float | int):
        return (sigma * sigma_down) ** 0.5
    positive = sigma_down > 0
    log_s = _xp.log(sigma)
    log_d = _xp.log(_xp.where(positive, sigma_down, sigma_down * 0 + 1))
    mid = _xp.exp(log_d - (log_d - log_s) * 0.5)
    return _xp.where(positive, mid, mid * 0)


def to_d(x: A, sigma: SigmaLike, denoised: A) -> A:
    """Return the probability-flow ODE slope ``(x - denoised) / sigma`` (Karras et al. eq. 1).

    Parameters
    ----------
    x, denoised : array
        Shape ``(B, ...)``.
    sigma : float or array of shape ``(B,)``
        Noise level of ``x``, broadcast over trailing axes; must be non-zero.
    """
    return (x - denoised) / _sig(sigma, x)


def predict_x0(model_output: A, sample: A, sigma: SigmaLike, prediction_type: str) -> A:
    """Turn a network output into the denoised estimate ``x0`` at noise level ``sigma``.

    ``epsilon``: ``x - sigma * eps``; ``v_prediction``: ``-sigma / sqrt(sigma**2 + 1) * v +
    x / (sigma**2 + 1)`` (Salimans & Ho 2022, in the VE convention); ``sample``: the output
    itself.

    Examples
    --------
    >>> import numpy as np
    >>> predict_x0(np.ones(2), np.full(2, 3.0), 2.0, "epsilon").tolist()
    [1.0, 1.0]
    """
    if prediction_type == "sample":
        return model_output
    s = _sig(sigma, sample)
    if prediction_type == "epsilon":
        return sample - s * model_output
    if prediction_type == "v_prediction":
        return model_output * (-s / (s**2 + 1) ** 0.5) + sample / (s**2 + 1)
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def first_half(x: A, denoised: A, sigma: SigmaLike, sigma_mid: SigmaLike) -> A:
    """Take the Euler half-step ``sigma -> sigma_mid``: ``x + to_d(x, sigma, denoised) * dt``.

    With ``sigma_mid == 0`` this lands on ``denoised`` (the last step of a schedule).
    """
    return x + to_d(x, sigma, denoised) * (_sig(sigma_mid, x) - _sig(sigma, x))


def second_half(
    x: A, x_mid: A, denoised_mid: A, sigma: SigmaLike, sigma_mid: SigmaLike, sigma_down: SigmaLike
) -> A:
    """Take the DPM-2 step ``sigma -> sigma_down`` from ``x`` with the slope at the midpoint."""
    return x + to_d(x_mid, sigma_mid, denoised_mid) * (_sig(sigma_down, x) - _sig(sigma, x))


def dpm2_ancestral_step(
    x: A,
    denoised: A,
    denoised_mid_fn: Any,
    sigma: SigmaLike,
    sigma_next: SigmaLike,
    noise: A | None,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> A:
    """Advance ``x`` one full DPM2-ancestral step ``sigma -> sigma_next`` (per-sample sigmas).

    This is the documented pure step for batches whose samples sit at different noise levels:
    ``sigma`` and ``sigma_next`` may be arrays of shape ``(B,)``. Samples whose ``sigma_down``
    is 0 take a plain Euler step to it, the others the midpoint step, elementwise.

    Parameters
    ----------
    x : array
        Shape ``(B, ...)``, at noise level ``sigma``.
    denoised : array
        The denoiser's output at ``(x, sigma)``.
    denoised_mid_fn : callable
        ``denoised_mid_fn(x_mid, sigma_mid) -> denoised`` evaluates the model at the midpoint.
    sigma, sigma_next : float or array of shape ``(B,)``
        Current and next noise levels.
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
    >>> import numpy as np
    >>> x = np.array([[1.0], [1.0]])
    >>> step = dpm2_ancestral_step(
    ...     x, x * 0, lambda xm, s: xm * 0, np.array([1.0, 2.0]), np.array([0.5, 1.0]), None, eta=0
    ... )
    >>> step.ravel().tolist()
    [0.5, 0.5]
    """
    down, up = ancestral_split(sigma, sigma_next, eta)
    if isinstance(down, float):
        if down == 0:
            return first_half(x, denoised, sigma, 0.0)
        mid = log_midpoint(sigma, down)
        x_mid = first_half(x, denoised, sigma, mid)
        out = second_half(x, x_mid, denoised_mid_fn(x_mid, mid), sigma, mid, down)
    else:
        euler = down <= 0
        mid = log_midpoint(sigma, down)
        # midpoint evaluated with sigma_mid = sigma where the Euler branch is taken, so the
        # model never sees sigma = 0 and the unused branch stays finite
        mid_safe = _xp.where(euler, sigma, mid)
        x_mid = first_half(x, denoised, sigma, mid_safe)
        dpm = second_half(x, x_mid, denoised_mid_fn(x_mid, mid_safe), sigma, mid_safe, down)
        euler_x = first_half(x, denoised, sigma, down)
        out = _xp.where(append_dims(euler, x.ndim), euler_x, dpm)
    if noise is not None:
        out = out + noise * s_noise * _sig(up, x)
    return out
