"""Map train-time timesteps to noise levels for the demo denoisers.

The bundled models receive ``(sample, timestep)`` like a diffusers UNet, with a float ``timestep``
that the scheduler derives from a sigma by interpolating ``log(sigma)`` linearly between the
integer train-time indices. The functions here invert that map, so a denoiser (or the training
script) can recover the sigma that a fractional timestep stands for. They import only numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["sigmas_at", "training_sigmas"]


def training_sigmas(config: Mapping[str, Any]) -> np.ndarray:
    """Return the train-time noise levels of a scheduler config.

    Parameters
    ----------
    config : Mapping
        A diffusers-style scheduler config with ``num_train_timesteps``, ``beta_start``,
        ``beta_end``, ``beta_schedule`` (``'linear'`` or ``'scaled_linear'``) and optionally
        ``trained_betas``.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(num_train_timesteps,)``: ``sigma_t = sqrt((1 - a_t) / a_t)``
        with ``a_t = prod_{s <= t} (1 - beta_s)``, the variance-exploding convention (Ho et al.
        2020, eq. 4, rewritten as ``x_t / sqrt(a_t) = x_0 + sigma_t * eps``). Increasing in ``t``.

    Raises
    ------
    ValueError
        If ``beta_schedule`` is not one of the two supported here.

    Examples
    --------
    >>> cfg = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    ...        "beta_schedule": "linear"}
    >>> sigmas = training_sigmas(cfg)
    >>> sigmas.shape, round(float(sigmas[0]), 4), round(float(sigmas[-1]), 2)
    ((1000,), 0.0292, 25.15)
    """
    n = int(config["num_train_timesteps"])
    trained = config.get("trained_betas")
    schedule = config.get("beta_schedule", "linear")
    if trained is not None:
        betas = np.asarray(trained, dtype=np.float64)
    elif schedule == "linear":
        betas = np.linspace(config["beta_start"], config["beta_end"], n, dtype=np.float64)
    elif schedule == "scaled_linear":
        start, end = float(config["beta_start"]) ** 0.5, float(config["beta_end"]) ** 0.5
        betas = np.linspace(start, end, n, dtype=np.float64) ** 2
    else:
        raise ValueError(
            f"beta_schedule={schedule!r} is not supported by the demo models; "
            "expected 'linear' or 'scaled_linear'."
        )
    alphas_cumprod = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - alphas_cumprod) / alphas_cumprod)


def sigmas_at(timesteps: Any, train_sigmas: np.ndarray) -> np.ndarray:
    """Return the sigma that each (possibly fractional) timestep stands for.

    This inverts the scheduler's sigma-to-timestep map: ``log(sigma)`` is interpolated linearly
    between neighbouring integer timesteps, so ``sigmas_at(t)`` at an integer ``t`` is the table
    value and at ``t + 0.5`` the geometric mean of its neighbours.

    Parameters
    ----------
    timesteps : float or array_like
        Train-time indices in ``[0, len(train_sigmas) - 1]``; any shape. Values outside are clamped.
    train_sigmas : numpy.ndarray
        Increasing table from :func:`training_sigmas`.

    Returns
    -------
    numpy.ndarray
        float64 array with the shape of ``timesteps``.

    Examples
    --------
    >>> table = np.array([1.0, 4.0])
    >>> sigmas_at([0.0, 0.5, 1.0], table).tolist()
    [1.0, 2.0, 4.0]
    """
    t = np.asarray(timesteps, dtype=np.float64)
    grid = np.arange(len(train_sigmas), dtype=np.float64)
    return np.exp(np.interp(t, grid, np.log(train_sigmas)))
