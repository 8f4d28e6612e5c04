"""The pipeline-saveable form of the scheduler, built only once diffusers is imported.

Nothing here changes a number: the subclass exists only so that ``issubclass`` checks against
diffusers' ``SchedulerMixin`` (how ``DiffusionPipeline.save_pretrained`` decides whether a
component can be saved) succeed. See :class:`kdpm2.SchedulerMixin`. Importing this module
does not import diffusers; :func:`saveable_class` does.
"""

from __future__ import annotations

import functools
from typing import Any

from . import scheduler

__all__ = ["saveable_class"]


@functools.cache
def saveable_class() -> type[scheduler.KDPM2AncestralDiscreteScheduler] | None:
    """Return the scheduler subclass that also derives from diffusers' ``SchedulerMixin``.

    Called by the scheduler's constructor while diffusers is imported; it imports diffusers'
    scheduler base (and so torch). The class is built once per process.

    Returns
    -------
    type or None
        The subclass, or ``None`` where diffusers has no usable ``SchedulerMixin`` (diffusers
        installed without torch).
    """
    try:
        from diffusers.schedulers.scheduling_utils import SchedulerMixin
    except ImportError:
        return None

    # kdpm2's from_pretrained/save_pretrained come first in the MRO and are the ones meant
    class KDPM2AncestralDiscreteScheduler(  # pyright: ignore[reportIncompatibleMethodOverride]
        scheduler.KDPM2AncestralDiscreteScheduler, SchedulerMixin
    ):
        """:class:`kdpm2.KDPM2AncestralDiscreteScheduler`, also derived from diffusers' mixin.

        Created by ``kdpm2.KDPM2AncestralDiscreteScheduler(...)`` while diffusers is imported;
        not meant to be named directly. kdpm2's own methods come first in the MRO, so
        diffusers' ``SchedulerMixin`` adds only what kdpm2 lacks (``compatibles``,
        ``push_to_hub``).
        """

        # DiffusionPipeline records [type(s).__module__, type(s).__name__] in model_index.json
        # and loads by looking that name up in that module: "kdpm2" makes it load the public
        # class, whose constructor gives this subclass again.
        __module__ = "kdpm2"
        __qualname__ = "KDPM2AncestralDiscreteScheduler"

        def __reduce__(self) -> tuple[Any, ...]:
            # Pickle (and copy) through the public class: this class is not reachable by its
            # name, and a copy should get the form that fits the process that loads it.
            return (scheduler._new_scheduler, (), dict(vars(self)))

    return KDPM2AncestralDiscreteScheduler
