"""Sample quality of the bundled digits models, judged by a classifier trained on real digits."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from kdpm2 import cli
from kdpm2.demo.quality import _reference, digit_quality


def _class_means() -> np.ndarray:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.stack([digits.data[digits.target == k].mean(axis=0) / 16.0 for k in range(10)])


def _blurred_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    noise = rng.uniform(0.0, 1.0, (n, 10, 10))
    kernel = np.array([0.25, 0.5, 0.25])
    blurred = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), 1, noise)
    blurred = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), 2, blurred)[
        :, 1:-1, 1:-1
    ]
    low = blurred.min(axis=(1, 2), keepdims=True)
    return (blurred - low) / (blurred.max(axis=(1, 2), keepdims=True) - low)


@pytest.fixture(scope="module", params=["digits", "digits-flow"])
def generated(request) -> np.ndarray:
    options = cli.SampleOptions(model=request.param, num_samples=300, steps=20, seed=0)
    samples = cli.sample(
        cli.build_model(options),
        cli.build_scheduler(options),
        num_samples=300,
        sample_shape=(64,),
        seed=0,
    )
    return cli.to_output(samples, options.model)


def test_generated_digits_pass_the_quality_check(generated):
    """If this fails, `kdpm2 sample` (--model digits, or digits-flow with the flow-matching
    sampler) draws digits a classifier does not recognise, misses classes, or collapses onto a
    few images (300 samples, 20 steps, seed 0)."""
    quality = digit_quality(generated)
    assert quality.passed, quality.summary()


def test_held_out_real_digits_pass_the_quality_check():
    """If this fails, the check itself is too strict: real digits must pass it."""
    _, held_out = _reference()
    rng = np.random.default_rng(1)
    real = held_out[rng.choice(len(held_out), 300, replace=False)]
    quality = digit_quality(real, seed=2)
    assert quality.passed, quality.summary()
    assert 0.9 < quality.confident_ratio < 1.1


@pytest.mark.parametrize(
    ("negative", "failing_figure"),
    [
        ("pure noise", "confident_ratio"),
        ("blurred noise", "confident_ratio"),
        ("class means", "spread_ratio"),
    ],
)
def test_quality_check_rejects_non_digits(negative, failing_figure):
    """If this fails, the quality check passes things that are not varied digits, so a passing
    model proves nothing. "class means" is a model that only ever draws the 10 class-mean
    images (30 copies each): recognisable, but collapsed."""
    rng = np.random.default_rng(0)
    samples = {
        "pure noise": lambda: rng.uniform(0.0, 1.0, (300, 64)),
        "blurred noise": lambda: _blurred_noise(rng, 300),
        "class means": lambda: np.tile(_class_means(), (30, 1)),
    }[negative]()
    quality = digit_quality(samples)
    assert not quality.passed, quality.summary()
    threshold = {"confident_ratio": 0.85, "spread_ratio": 0.5}[failing_figure]
    assert getattr(quality, failing_figure) < threshold, quality.summary()


def test_quality_check_rejects_bad_shapes():
    """If this fails, images of the wrong size are scored as if they were digits."""
    with pytest.raises(ValueError, match=r"samples has shape \(5, 7, 7\); expected"):
        digit_quality(np.zeros((5, 7, 7)))
