"""A sample-quality check for generated 8x8 digits.

A logistic-regression classifier trained on half of scikit-learn's real digits judges the samples:
good digits make it about as confident as held-out real digits do, every class shows up, and the
samples are about as far apart from each other as real digits are (no collapse onto a few images).
scikit-learn is imported only when the check runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DigitQuality", "digit_quality"]

CONFIDENT_PROBABILITY = 0.9
MIN_CONFIDENT_RATIO = 0.85
MIN_CLASS_SHARE = 0.04
MIN_SPREAD_RATIO = 0.5


@dataclass(frozen=True, slots=True)
class DigitQuality:
    """How a set of generated digits compares with real ones.

    Attributes
    ----------
    confident_share : float
        Share of samples whose top class probability is at least 0.9.
    real_confident_share : float
        The same share for held-out real digits.
    class_shares : tuple of float
        Share of samples whose top class is 0, 1, ..., 9.
    spread : float
        Mean distance from each sample to its nearest other sample (pixels in ``[0, 1]``).
    real_spread : float
        The same figure for as many held-out real digits.
    """

    confident_share: float
    real_confident_share: float
    class_shares: tuple[float, ...]
    spread: float
    real_spread: float

    @property
    def confident_ratio(self) -> float:
        """``confident_share / real_confident_share``; at least 0.85 to pass."""
        return self.confident_share / self.real_confident_share

    @property
    def min_class_share(self) -> float:
        """Share of the rarest top class; at least 0.04 to pass."""
        return min(self.class_shares)

    @property
    def spread_ratio(self) -> float:
        """``spread / real_spread``; at least 0.5 to pass."""
        return self.spread / self.real_spread

    @property
    def passed(self) -> bool:
        """Whether all three criteria hold."""
        return (
            self.confident_ratio >= MIN_CONFIDENT_RATIO
            and self.min_class_share >= MIN_CLASS_SHARE
            and self.spread_ratio >= MIN_SPREAD_RATIO
        )

    def summary(self) -> str:
        """Return the three figures and the verdict on one line."""
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"confident {self.confident_share:.3f} vs real {self.real_confident_share:.3f} "
            f"(ratio {self.confident_ratio:.2f}), rarest class {self.min_class_share:.3f}, "
            f"spread {self.spread:.3f} vs real {self.real_spread:.3f} "
            f"(ratio {self.spread_ratio:.2f}): {verdict}"
        )


@functools.lru_cache(maxsize=1)
def _reference() -> tuple[Any, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    data, target = load_digits(return_X_y=True)
    x_train, x_test, y_train, _ = train_test_split(
        np.asarray(data) / 16.0, target, test_size=0.5, random_state=0, stratify=target
    )
    classifier = LogisticRegression(max_iter=5000).fit(x_train, y_train)
    return classifier, np.asarray(x_test)


def _mean_nearest_distance(x: np.ndarray) -> float:
    sq = (x * x).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(d2, np.inf)
    return float(np.sqrt(np.maximum(d2.min(axis=1), 0.0)).mean())


def digit_quality(samples: np.ndarray, *, seed: int = 0) -> DigitQuality:
    """Score generated digits against held-out real ones.

    Parameters
    ----------
    samples : numpy.ndarray
        Shape ``(N, 8, 8)`` or ``(N, 64)``, pixels in ``[0, 1]`` (real digits are ``data / 16``).
        ``N >= 2``; the check is meant for a few hundred.
    seed : int, default 0
        Picks the ``N`` real digits (of 899 held out) whose spread is the reference.

    Returns
    -------
    DigitQuality

    Raises
    ------
    ValueError
        If ``samples`` does not hold at least two 64-pixel images.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> real = load_digits().data[-300:] / 16.0
    >>> digit_quality(real).passed
    True
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim < 2 or x[0].size != 64 or len(x) < 2:
        raise ValueError(f"samples has shape {x.shape}; expected (N, 8, 8) or (N, 64) with N >= 2.")
    x = x.reshape(len(x), 64)
    classifier, x_test = _reference()
    probs = classifier.predict_proba(x)
    real_probs = classifier.predict_proba(x_test)
    top = probs.argmax(axis=1)
    rng = np.random.default_rng(seed)
    subset = x_test[rng.choice(len(x_test), size=min(len(x), len(x_test)), replace=False)]
    return DigitQuality(
        confident_share=float((probs.max(axis=1) >= CONFIDENT_PROBABILITY).mean()),
        real_confident_share=float((real_probs.max(axis=1) >= CONFIDENT_PROBABILITY).mean()),
        class_shares=tuple(float((top == k).mean()) for k in range(10)),
        spread=_mean_nearest_distance(x),
        real_spread=_mean_nearest_distance(subset),
    )
