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

from ..schedule import train_schedule_from_config

__all__ = ["sigmas_at", "training_sigmas"]


def training_sigmas(config: Mapping[str, Any]) -> np.ndarray:
    """Return the train-time noise levels of a scheduler config.

    Parameters
    ----------
    config : Mapping
        A diffusers-style scheduler config with ``num_train_timesteps``, ``beta_start``,
        ``beta_end``, ``beta_schedule`` and optionally ``trained_betas``.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(num_train_timesteps,)``: ``sigma_t = sqrt((1 - a_t) / a_t)``
        with ``a_t = prod_{s <= t} (1 - beta_s)``, the variance-exploding convention (Ho et al.
        2020, eq. 4, rewritten as ``x_t / sqrt(a_t) = x_0 + sigma_t * eps``). Increasing in ``t``.
        The scheduler's own table (:func:`kdpm2.schedule.train_schedule_from_config`), so a
        timestep means the same sigma to the model as to the scheduler.

    Examples
    --------
    >>> cfg = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    ...        "beta_schedule": "linear"}
    >>> sigmas = training_sigmas(cfg)
    >>> sigmas.shape, round(float(sigmas[0]), 4), round(float(sigmas[-1]), 2)
    ((1000,), 0.0292, 25.15)
    """
    return np.asarray(train_schedule_from_config(config).sigmas)


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
