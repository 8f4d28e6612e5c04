"""kdpm2: the KDPM2 Ancestral Discrete ("DPM2 a") diffusion sampler for NumPy and torch.

Drop-in for diffusers' ``KDPM2AncestralDiscreteScheduler`` (same numbers as diffusers 0.42.1)
and for k-diffusion's ``sample_dpm_2_ancestral`` (same numbers as k-diffusion 0.1.1.post1).

``import kdpm2`` imports neither torch nor diffusers. ``kdpm2.KDPM2AncestralDiscreteScheduler``
and ``kdpm2.SchedulerMixin`` are resolved on first access: where diffusers can be imported,
the scheduler is a genuine diffusers scheduler (``kdpm2._diffusers``: diffusers'
``SchedulerMixin`` and ``ConfigMixin``, so saving, loading and swapping schedulers in
pipelines are diffusers' own code); elsewhere it is kdpm2's own class
(``kdpm2.scheduler``), with the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._loop import TimestepNotInScheduleError as TimestepNotInScheduleError
from ._math import add_scaled as add_scaled
from ._math import ancestral_split as ancestral_split
from ._math import log_midpoint as log_midpoint
from ._math import predict_x0 as predict_x0
from ._math import to_d as to_d
from ._version import __version__ as __version__
from .config import FrozenConfig as FrozenConfig
from .noise import BrownianTreeNoiseSampler as BrownianTreeNoiseSampler
from .output import KDPM2AncestralDiscreteSchedulerOutput as KDPM2AncestralDiscreteSchedulerOutput
from .sampling import denoiser_from_network as denoiser_from_network
from .sampling import dpm2_ancestral_step as dpm2_ancestral_step
from .sampling import flow_dpm2_ancestral_step as flow_dpm2_ancestral_step
from .sampling import get_sigmas_exponential as get_sigmas_exponential
from .sampling import get_sigmas_from_config as get_sigmas_from_config
from .sampling import get_sigmas_karras as get_sigmas_karras
from .sampling import sample_dpm_2_ancestral as sample_dpm_2_ancestral
from .sampling import sample_dpm_2_ancestral_rf as sample_dpm_2_ancestral_rf
from .schedule import Schedule as Schedule
from .schedule import ScheduleConfig as ScheduleConfig
from .schedule import make_schedule as make_schedule

if TYPE_CHECKING:
    from .flow import (
        FlowMatchKDPM2AncestralDiscreteScheduler as FlowMatchKDPM2AncestralDiscreteScheduler,
    )
    from .scheduler import KDPM2AncestralDiscreteScheduler as KDPM2AncestralDiscreteScheduler
    from .scheduler import SchedulerMixin as SchedulerMixin

__all__ = [
    "BrownianTreeNoiseSampler",
    "FlowMatchKDPM2AncestralDiscreteScheduler",
    "FrozenConfig",
    "KDPM2AncestralDiscreteScheduler",
    "KDPM2AncestralDiscreteSchedulerOutput",
    "Schedule",
    "ScheduleConfig",
    "SchedulerMixin",
    "TimestepNotInScheduleError",
    "__version__",
    "add_scaled",
    "ancestral_split",
    "denoiser_from_network",
    "dpm2_ancestral_step",
    "flow_dpm2_ancestral_step",
    "get_sigmas_exponential",
    "get_sigmas_from_config",
    "get_sigmas_karras",
    "log_midpoint",
    "make_schedule",
    "predict_x0",
    "sample_dpm_2_ancestral",
    "sample_dpm_2_ancestral_rf",
    "to_d",
]

# public name -> kdpm2's own module that defines it (used where diffusers is missing)
_RESOLVED = {
    "KDPM2AncestralDiscreteScheduler": "scheduler",
    "SchedulerMixin": "scheduler",
    "FlowMatchKDPM2AncestralDiscreteScheduler": "flow",
}


def _resolve(name: str) -> Any:
    """Return the class a public name resolves to: the diffusers-backed one if possible."""
    import importlib

    try:
        from . import _diffusers
    except ImportError:  # no diffusers, or diffusers without torch
        return getattr(importlib.import_module(f"kdpm2.{_RESOLVED[name]}"), name)
    return getattr(_diffusers, name)


def __getattr__(name: str) -> Any:
    if name in _RESOLVED:
        for resolved in _RESOLVED:
            globals()[resolved] = _resolve(resolved)
        return globals()[name]
    raise AttributeError(f"module 'kdpm2' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_RESOLVED))
