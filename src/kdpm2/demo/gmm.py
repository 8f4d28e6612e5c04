"""A 2-D Gaussian mixture whose ideal denoiser is known in closed form.

For data ``x_0 ~ sum_k w_k N(mu_k, s_k**2 I)`` and ``x = x_0 + sigma * eps``, the noisy marginal is
``sum_k w_k N(mu_k, (s_k**2 + sigma**2) I)`` and the posterior mean is

    E[x_0 | x] = sum_k r_k(x) (mu_k + s_k**2 / (s_k**2 + sigma**2) (x - mu_k)),

with ``r_k(x)`` the posterior weight of component ``k`` (Bayes' rule on the noisy marginal; see
Karras et al. 2022, eq. 3, for the role of the ideal denoiser). :class:`GMMDenoiser` wraps it as an
``eps``-prediction model with the interface of the digits network, so samplers can be checked
against an exact score instead of a trained one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpm2.demo._sigmas import sigmas_at, training_sigmas
from kdpm2.demo.digits import DEMO_DIR

__all__ = ["GMMDenoiser", "GaussianMixture2D", "default_mixture"]


@dataclass(frozen=True, slots=True)
class GaussianMixture2D:
    """Mixture of isotropic 2-D Gaussians.

    Parameters
    ----------
    means : numpy.ndarray
        Shape ``(K, 2)``.
    stds : numpy.ndarray
        Shape ``(K,)``, positive.
    weights : numpy.ndarray
        Shape ``(K,)``, non-negative, summing to 1.

    Examples
    --------
    >>> mix = GaussianMixture2D(np.zeros((1, 2)), np.ones(1), np.ones(1))
    >>> mix.denoise(np.array([[2.0, 0.0]]), 1.0).tolist()  # x * c**2 / (c**2 + sigma**2)
    [[1.0, 0.0]]
    """

    means: np.ndarray
    stds: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        k = len(self.weights)
        if self.means.shape != (k, 2) or self.stds.shape != (k,):
            raise ValueError(
                f"means has shape {self.means.shape} and stds {self.stds.shape}, but weights has "
                f"{k} entries; expected means (K, 2), stds (K,) and weights (K,)."
            )
        if not np.isclose(self.weights.sum(), 1.0) or (self.weights < 0).any():
            raise ValueError(f"weights {self.weights.tolist()} must be >= 0 and sum to 1.")

    def _log_components(self, x: np.ndarray, variances: np.ndarray) -> np.ndarray:
        sq = ((x[..., None, :] - self.means) ** 2).sum(axis=-1)
        return np.log(self.weights) - np.log(2.0 * np.pi * variances) - 0.5 * sq / variances

    def density(self, points: np.ndarray, sigma: float = 0.0) -> np.ndarray:
        """Return the density of the mixture, optionally convolved with ``N(0, sigma**2 I)``.

        Parameters
        ----------
        points : numpy.ndarray
            Shape ``(..., 2)``.
        sigma : float, default 0.0
            Noise level of the marginal.

        Returns
        -------
        numpy.ndarray
            float64, shape ``(...)``.
        """
        variances = self.stds**2 + sigma**2
        log_p = self._log_components(np.asarray(points, dtype=np.float64), variances)
        return np.exp(log_p).sum(axis=-1)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` exact samples, float64 of shape ``(n, 2)``."""
        k = rng.choice(len(self.weights), size=n, p=self.weights)
        return self.means[k] + self.stds[k, None] * rng.standard_normal((n, 2))

    def denoise(self, x: np.ndarray, sigma: Any) -> np.ndarray:
        """Return the ideal denoiser ``E[x_0 | x_0 + sigma * eps = x]``.

        Parameters
        ----------
        x : numpy.ndarray
            Noisy points, shape ``(B, 2)``.
        sigma : float or numpy.ndarray
            Noise std (VE convention), scalar or shape ``(B,)``; positive.

        Returns
        -------
        numpy.ndarray
            float64, shape ``(B, 2)``.
        """
        x = np.asarray(x, dtype=np.float64)
        sigma2 = np.broadcast_to(np.asarray(sigma, dtype=np.float64) ** 2, (x.shape[0],))[:, None]
        variances = self.stds**2 + sigma2  # (B, K)
        log_r = self._log_components(x, variances)
        r = np.exp(log_r - log_r.max(axis=1, keepdims=True))
        r /= r.sum(axis=1, keepdims=True)
        shrink = (self.stds**2 / variances)[..., None]  # (B, K, 1)
        means = self.means + shrink * (x[:, None, :] - self.means)
        return (r[..., None] * means).sum(axis=1)


def default_mixture() -> GaussianMixture2D:
    """Return the demo mixture: eight blobs on a ring of radius 2 plus a wider one in the middle.

    Returns
    -------
    GaussianMixture2D

    Examples
    --------
    >>> mix = default_mixture()
    >>> len(mix.weights), round(float(mix.weights.sum()), 6)
    (9, 1.0)
    """
    angles = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    ring = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    means = np.concatenate([ring, np.zeros((1, 2))])
    stds = np.array([0.15] * 8 + [0.4])
    weights = np.array([0.1] * 8 + [0.2])
    return GaussianMixture2D(means, stds, weights)


class GMMDenoiser:
    """Exact ``eps`` predictor for a Gaussian mixture, called like the digits network.

    ``model(sample, timestep)`` takes the scaled input ``x / sqrt(sigma**2 + 1)`` and a float
    train-time timestep, recovers ``sigma`` from the scheduler config's noise table (log-linear
    between integer timesteps, as the scheduler maps sigmas to timesteps) and returns
    ``(x - E[x_0 | x]) / sigma``.

    Parameters
    ----------
    mixture : GaussianMixture2D, optional
        Default: :func:`default_mixture`.
    scheduler_config : Mapping, optional
        Default: the bundled ``scheduler_config.json``.

    Examples
    --------
    >>> model = GMMDenoiser()
    >>> model(np.zeros((4, 2), np.float32), 500.0).shape
    (4, 2)
    """

    def __init__(
        self,
        mixture: GaussianMixture2D | None = None,
        scheduler_config: Mapping[str, Any] | None = None,
    ):
        if scheduler_config is None:
            text = (DEMO_DIR / "scheduler_config.json").read_text(encoding="utf-8")
            config: Mapping[str, Any] = json.loads(text)
        else:
            config = scheduler_config
        self.mixture = default_mixture() if mixture is None else mixture
        self._train_sigmas = training_sigmas(config)

    def __call__(self, sample: Any, timestep: Any) -> Any:
        """Return ``eps`` with the type, dtype and shape ``(B, 2)`` of ``sample``.

        A torch tensor is evaluated in NumPy (float64) and converted back.
        """
        is_tensor = hasattr(sample, "detach")
        x_scaled = sample.detach().cpu().double().numpy() if is_tensor else np.asarray(sample)
        if hasattr(timestep, "detach"):
            timestep = timestep.detach().cpu().double().numpy()
        sigma = np.broadcast_to(sigmas_at(timestep, self._train_sigmas), (x_scaled.shape[0],))
        x = x_scaled.astype(np.float64) * np.sqrt(sigma**2 + 1.0)[:, None]
        eps = (x - self.mixture.denoise(x, sigma)) / sigma[:, None]
        if is_tensor:
            import torch

            return torch.from_numpy(eps).to(device=sample.device, dtype=sample.dtype)
        return eps.astype(x_scaled.dtype, copy=False)
