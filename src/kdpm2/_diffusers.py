"""The scheduler as a genuine diffusers scheduler, built on diffusers' own config machinery.

Imported only when diffusers is: ``kdpm2.KDPM2AncestralDiscreteScheduler`` names the class
here whenever diffusers (with torch) can be imported, and kdpm2's own class otherwise. The
numbers come from the same state machine (:class:`kdpm2.scheduler.KDPM2AncestralSchedulerCore`);
what diffusers supplies is everything a diffusers user touches besides: ``register_to_config``,
``FrozenDict`` configs, ``from_config``/``from_pretrained``/``save_pretrained``, config
attribute access with its deprecation warning, ``compatibles``, and the ``isinstance`` checks
that pipelines make when they save, load or swap a scheduler.
"""

from __future__ import annotations

from typing import Any

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from . import flow, scheduler

__all__ = [
    "FlowMatchKDPM2AncestralDiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "SchedulerMixin",
]


class KDPM2AncestralDiscreteScheduler(
    scheduler.KDPM2AncestralSchedulerCore, SchedulerMixin, ConfigMixin
):
    __doc__ = scheduler.KDPM2AncestralDiscreteScheduler.__doc__
    # pipelines record [module, class] in model_index.json and load by that name; "kdpm2"
    # resolves to this class (see kdpm2.__getattr__), so does pickle
    __module__ = "kdpm2"

    __init__ = register_to_config(scheduler.KDPM2AncestralSchedulerCore.__init__)

    @property
    def init_noise_sigma(self) -> Any:
        """Standard deviation of the initial noise, as diffusers gives it: a 0-d float32 tensor."""
        import torch

        return torch.tensor(self.schedule.init_noise_sigma, dtype=torch.float32)


class FlowMatchKDPM2AncestralDiscreteScheduler(
    flow.FlowMatchKDPM2AncestralSchedulerCore, SchedulerMixin, ConfigMixin
):
    __doc__ = flow.FlowMatchKDPM2AncestralDiscreteScheduler.__doc__
    __module__ = "kdpm2"

    __init__ = register_to_config(flow.FlowMatchKDPM2AncestralSchedulerCore.__init__)
