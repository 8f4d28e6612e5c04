"""kdpm2: the KDPM2 Ancestral Discrete ("DPM2 a") diffusion sampler for NumPy and torch.

Drop-in for diffusers' ``KDPM2AncestralDiscreteScheduler`` (same numbers as diffusers 0.42.1)
and for k-diffusion's ``sample_dpm_2_ancestral`` (same numbers as k-diffusion 0.1.1.post1).
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._math import ancestral_split as ancestral_split
from ._math import dpm2_ancestral_step as dpm2_ancestral_step
from ._math import log_midpoint as log_midpoint
from ._math import predict_x0 as predict_x0
from ._math import to_d as to_d
from .config import FrozenConfig as FrozenConfig
from .noise import BrownianTreeNoiseSampler as BrownianTreeNoiseSampler
from .sampling import denoiser_from_network as denoiser_from_network
from .sampling import get_sigmas_exponential as get_sigmas_exponential
from .sampling import get_sigmas_from_config as get_sigmas_from_config
from .sampling import get_sigmas_karras as get_sigmas_karras
from .sampling import sample_dpm_2_ancestral as sample_dpm_2_ancestral
from .schedule import Schedule as Schedule
from .schedule import make_schedule as make_schedule
from .scheduler import KDPM2AncestralDiscreteScheduler as KDPM2AncestralDiscreteScheduler
from .scheduler import (
    KDPM2AncestralDiscreteSchedulerOutput as KDPM2AncestralDiscreteSchedulerOutput,
)
from .scheduler import SchedulerMixin as SchedulerMixin
from .scheduler import TimestepNotInScheduleError as TimestepNotInScheduleError

__all__ = [
    "BrownianTreeNoiseSampler",
    "FrozenConfig",
    "KDPM2AncestralDiscreteScheduler",
    "KDPM2AncestralDiscreteSchedulerOutput",
    "Schedule",
    "SchedulerMixin",
    "TimestepNotInScheduleError",
    "__version__",
    "ancestral_split",
    "denoiser_from_network",
    "dpm2_ancestral_step",
    "get_sigmas_exponential",
    "get_sigmas_from_config",
    "get_sigmas_karras",
    "log_midpoint",
    "make_schedule",
    "predict_x0",
    "sample_dpm_2_ancestral",
    "to_d",
]
