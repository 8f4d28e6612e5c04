"""Demo models for ``kdpm2 sample``: the bundled digits network and an exact Gaussian mixture.

Both are called like a diffusers UNet with ``prediction_type='epsilon'``:
``model(scheduler.scale_model_input(x, t), t) -> eps``. They need only NumPy (reading the digits
weights also needs ``safetensors``); torch is used only when asked for.
"""

from __future__ import annotations

from kdpm2.demo.digits import DEMO_DIR as DEMO_DIR
from kdpm2.demo.digits import DigitsDenoiser as DigitsDenoiser
from kdpm2.demo.digits import WeightsError as WeightsError
from kdpm2.demo.digits import load_digits_denoiser as load_digits_denoiser
from kdpm2.demo.gmm import GaussianMixture2D as GaussianMixture2D
from kdpm2.demo.gmm import GMMDenoiser as GMMDenoiser
from kdpm2.demo.gmm import default_mixture as default_mixture

__all__ = [
    "DEMO_DIR",
    "DigitsDenoiser",
    "GMMDenoiser",
    "GaussianMixture2D",
    "WeightsError",
    "default_mixture",
    "load_digits_denoiser",
]
