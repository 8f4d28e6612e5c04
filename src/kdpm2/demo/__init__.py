"""Demo models for ``kdpm2 sample``: the bundled digits networks and an exact Gaussian mixture.

All are called like a diffusers model: ``model(scheduler.scale_model_input(x, t), t)``. The
digits diffusion network (``DEMO_DIR``) and the Gaussian mixture return ``eps``
(``prediction_type='epsilon'``); the digits rectified-flow network (``FLOW_DIR``) returns the
velocity that a flow-matching scheduler steps with. They need only NumPy (reading the digits
weights also needs ``safetensors``); torch is used only when asked for.
"""

from __future__ import annotations

from kdpm2.demo.digits import DEMO_DIR as DEMO_DIR
from kdpm2.demo.digits import FLOW_DIR as FLOW_DIR
from kdpm2.demo.digits import DigitsDenoiser as DigitsDenoiser
from kdpm2.demo.digits import WeightsError as WeightsError
from kdpm2.demo.digits import load_digits_denoiser as load_digits_denoiser
from kdpm2.demo.gmm import GaussianMixture2D as GaussianMixture2D
from kdpm2.demo.gmm import GMMDenoiser as GMMDenoiser
from kdpm2.demo.gmm import default_mixture as default_mixture

__all__ = [
    "DEMO_DIR",
    "FLOW_DIR",
    "DigitsDenoiser",
    "GMMDenoiser",
    "GaussianMixture2D",
    "WeightsError",
    "default_mixture",
    "load_digits_denoiser",
]
