"""The loop state every kdpm2 scheduler shares: where a two-calls-per-step sampling loop stands.

:class:`SchedulerLoop` holds the schedule, the step and begin indices and the sample kept
between the two halves of a step, finds a loop's start without a device sync, and checks the
calls that advance it. The diffusion scheduler (:mod:`kdpm2.scheduler`) and the flow scheduler
(:mod:`kdpm2.flow`) derive from it; each supplies its schedule and its step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from . import _xp
from ._validate import a_type, check_array, check_int, check_step_inputs, timestep_value

__all__ = [
    "LoopSchedule",
    "SchedulerLoop",
    "TimestepNotInScheduleError",
    "as_int",
    "is_first_half",
    "to_output",
]


class TimestepNotInScheduleError(ValueError, IndexError):
    """A timestep handed to the scheduler is not one of ``scheduler.timesteps``.

    Subclasses both ``ValueError`` (it is bad input) and ``IndexError`` (what diffusers raises).
    """


def as_int(value: Any) -> Any:
    """Read a 0-d integer tensor as a Python int (diffusers accepts one); anything else as is."""
    if _xp.is_torch(value) and value.ndim == 0 and not value.is_floating_point():
        return int(value)
    return value


def to_output(values: np.ndarray, dtype: str, device: Any = None) -> Any:
    """Return a host table as the scheduler shows it: a tensor once torch is in use, else NumPy."""
    torch = _xp.torch_module()
    if torch is None and (device is None or str(device) == "cpu"):
        return values.astype(dtype)
    if torch is None:
        try:
            import torch  # a device was asked for: the caller uses torch
        except ImportError:
            raise ImportError(
                f"device={device!r} needs torch; install it, or leave device out (or 'cpu') "
                "for NumPy arrays."
            ) from None
    out = torch.from_numpy(values.astype(dtype))
    return out if device is None else out.to(device)


class LoopSchedule(Protocol):
    """What the loop reads of a schedule: one timestep per model call (``2N - 1`` for N steps)."""

    @property
    def num_inference_steps(self) -> int:
        """``N``, the number of steps."""
        ...

    @property
    def timesteps(self) -> np.ndarray:
        """Host table of the model's timestep at each call, shape ``(2N - 1,)``."""
        ...

    @property
    def timesteps_dtype(self) -> str:
        """The dtype the scheduler shows ``timesteps`` in."""
        ...

    def steps(self) -> Sequence[Any]:
        """Return the per-step levels as Python floats, one record per step."""
        ...


S = TypeVar("S", bound=LoopSchedule)


class SchedulerLoop(Generic[S]):
    """The loop state every kdpm2 scheduler shares: where a sampling loop stands.

    Two model calls per step, interleaved in ``timesteps`` (the first half of a step at an
    even index). State: the schedule (``_schedule``, replaced whole by ``set_timesteps``; a
    :class:`LoopSchedule`), the output form of its timesteps
    (``_timesteps``: the tensor a loop iterates, kept so that its elements are recognised
    without reading their values, i.e. without a device sync), the step index, the begin
    index, and ``sample``, the sample kept between the two halves of a step. A subclass
    supplies ``config`` and :meth:`_default_schedule`.
    """

    order: ClassVar[int] = 2

    def _reset_loop(self) -> None:
        self._schedule: S | None = None
        self._timesteps: Any = None
        self._steps: Sequence[Any] = ()  # the schedule's steps(), read by each call
        self._first_timestep = 0.0  # where a compiled loop starts
        self._step_index: int | None = None
        self._begin_index: int | None = None
        #: The sample at the start of the current step, kept between its two halves.
        self.sample: Any = None

    def _default_schedule(self) -> S:
        """Return the schedule to use before ``set_timesteps`` (built on first use)."""
        raise NotImplementedError

    if TYPE_CHECKING:

        @property
        def config(self) -> Any:
            """The constructor's arguments (supplied by the config machinery)."""

    def _use(self, schedule: S, device: Any) -> None:
        """Switch to ``schedule`` and reset the loop state (after it is built: no half state)."""
        timesteps = to_output(schedule.timesteps, schedule.timesteps_dtype, device)
        self._schedule, self._timesteps = schedule, timesteps
        self._steps = schedule.steps()
        self._first_timestep = float(schedule.timesteps[0])
        self._step_index = self._begin_index = None
        self.sample = None

    @property
    def schedule(self) -> S:
        """The pure float64 tables behind the current schedule.

        Before ``set_timesteps``, the schedule the matching diffusers class builds in its
        constructor (built here on first use).
        """
        if self._schedule is None:
            schedule = self._default_schedule()
            self._use(schedule, None)
            return schedule
        return self._schedule

    @property
    def num_inference_steps(self) -> int:
        """``N``, the number of steps of the current schedule."""
        return self.schedule.num_inference_steps

    @property
    def timesteps(self) -> Any:
        """Training-time timestep of each model call, shape ``(2N - 1,)``.

        A torch tensor (on the ``device`` given to ``set_timesteps``) when torch is in use,
        else a NumPy array, of the dtype the matching diffusers class uses.
        """
        self.schedule  # noqa: B018 - builds the default schedule on first use
        return self._timesteps

    @property
    def step_index(self) -> int | None:
        """Index of the next model call in ``timesteps``; ``None`` before the first call."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """Index the loop starts at, if set with :meth:`set_begin_index`."""
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start the next loop at ``timesteps[begin_index]`` (img2img: ``2 * k`` skips ``k`` steps).

        Raises
        ------
        ValueError
            ``begin_index`` is not an index of ``timesteps``.
        """
        n = len(self.schedule.timesteps)
        self._begin_index = check_int(
            "begin_index",
            begin_index,
            lambda v: 0 <= v < n,
            f"an integer in [0, {n - 1}] (an index of scheduler.timesteps)",
        )

    @property
    def state_in_first_order(self) -> bool:
        """Whether the next call is the first (Euler) half of a step; the phase of the loop."""
        return is_first_half(self._step_index or 0)

    def index_for_timestep(self, timestep: Any, schedule_timesteps: Any = None) -> int:
        """Return the index of ``timestep`` in the schedule: its first match at a step start.

        With ``eta = 1`` a midpoint's timestep equals the next step's (the log midpoint of
        ``sigma`` and ``sigma_next**2 / sigma`` is ``sigma_next``), so a value can occur twice;
        a loop can only start at the first half of a step (an even index), so the first even
        match is taken. diffusers takes the second match, which is the same index except when
        the first timestep itself repeats (``squaredcos_cap_v2`` with Karras sigmas), where
        diffusers skips ahead and then steps past the end of its schedule.

        Raises
        ------
        TimestepNotInScheduleError
            ``timestep`` is not in the schedule.
        """
        if schedule_timesteps is None:
            table = self.schedule.timesteps
        else:
            if _xp.is_torch(schedule_timesteps):
                schedule_timesteps = schedule_timesteps.detach().cpu()
            table = np.asarray(schedule_timesteps, dtype=np.float64)
        value = timestep_value(timestep)
        hits = np.flatnonzero(table == value)
        if len(hits) == 0:
            raise TimestepNotInScheduleError(
                f"timestep {value!r} is not in scheduler.timesteps ({len(table)} values, "
                f"{float(table[0])!r} ... {float(table[-1])!r}). Pass a value from "
                "scheduler.timesteps, or call set_begin_index() to start mid-schedule."
            )
        even = hits[hits % 2 == 0]
        return int(even[0] if len(even) else hits[0])

    def _start_index(self, timestep: Any) -> int:
        """Index of a loop's first call: the first even match of ``timestep``'s value.

        When ``timestep`` is the first element of this scheduler's own ``timesteps`` tensor
        (what iterating over it yields: a view), it is recognised from the view's storage
        offset, with no read of its value, so a loop on an accelerator needs no host-device
        sync even at its start (a GPU property: the read would be a sync).
        """
        ts = self._timesteps
        if _xp.compiling() and _xp.is_torch(timestep):
            # reading the value, or the view's offset, would break the graph: a compiled loop
            # starts at the first call (set_begin_index() starts it elsewhere), which the
            # device checks without a sync
            torch = _xp.torch_module()
            assert torch is not None  # a tensor was given
            torch._assert_async(
                timestep == self._first_timestep,
                "a compiled loop starts at scheduler.timesteps[0]; call set_begin_index() to "
                "start it elsewhere",
            )
            return 0
        if (
            getattr(timestep, "_base", None) is ts
            and timestep.ndim == 0
            and timestep.storage_offset() == ts.storage_offset()
        ):
            return 0
        return self.index_for_timestep(timestep)

    def _call_index(self, timestep: Any, method: str) -> int:
        """Index of this model call in ``timesteps`` (a loop's start is found on its first call)."""
        if self._schedule is None:
            self.schedule  # noqa: B018 - builds the default schedule on first use
        calls = 2 * len(self._steps) - 1  # (a list: no NumPy read for a compiled loop to trace)
        k = self._step_index
        if k is None:
            k = self._begin_index if self._begin_index is not None else self._start_index(timestep)
        if k >= calls:
            raise IndexError(
                f"{method}() was called after the last timestep (all {calls} calls of the "
                f"{self.num_inference_steps}-step schedule are done); call set_timesteps() to "
                "start a new loop."
            )
        return k

    def _begin_step(self, timestep: Any, model_output: Any, sample: Any, generator: Any) -> int:
        """Return the index of this ``step`` call after checking its inputs (no state change).

        Raises for a call after the loop's end, a first timestep not in the schedule, bad
        inputs, and a second half whose first half this scheduler did not take.
        """
        k = self._call_index(timestep, "step")
        check_step_inputs(model_output, sample, generator)
        if is_first_half(k):
            return k
        kept = self.sample
        if kept is None:
            raise RuntimeError(
                f"step() at index {k} is the second half of a DPM2 step but the first half "
                "was not taken by this scheduler; start loops at an even index "
                "(set_begin_index(2 * k))."
            )
        # (a device that changes between the halves is reported by torch's own arithmetic)
        if type(kept) is not type(sample):
            raise ValueError(
                f"sample is {_where(sample)} but the first half of this step had "
                f"{_where(kept)}; both calls of a DPM2 step must see the same kind of array."
            )
        if kept.shape != sample.shape:
            raise ValueError(
                f"sample has shape {tuple(sample.shape)} but the first half of this step had "
                f"{tuple(kept.shape)}; both calls of a DPM2 step must see the same "
                "batch (call set_timesteps() to start a new loop for another batch)."
            )
        return k

    def _levels(self, i: int, like: Any) -> Any:
        """Step ``i``'s levels: its record in :meth:`LoopSchedule.steps`, of Python floats.

        Under ``torch.compile`` the same values as 0-d float64 tensors on ``like``'s device,
        indexed from a table built in the graph: the step index then stays symbolic, so a
        compiled ``step`` is not recompiled for every step (a GPU property: a constant table
        on the device, no host input that would keep CUDA graphs off).
        """
        if not _xp.compiling():
            return self._steps[i]
        torch = _xp.torch_module()
        assert torch is not None  # compiling
        table = torch.tensor(self._steps, dtype=torch.float64, device=like.device)
        return type(self._steps[0])(*table[i].unbind())

    def _noising_indices(
        self, samples_name: str, samples: Any, noise: Any, timesteps_name: str, timesteps: Any
    ) -> list[int]:
        """Check a noising call's arguments; return the call index whose level each sample gets.

        Without a begin index each timestep is looked up by value (a step start); after
        ``set_begin_index`` the loop's current index applies (img2img before the first step,
        inpainting after each), as diffusers picks it.
        """
        torch_in = check_array(samples_name, samples)
        if check_array("noise", noise) != torch_in or noise.shape != samples.shape:
            raise ValueError(
                f"noise is {a_type(noise)} of shape {tuple(noise.shape)} but "
                f"{samples_name} {a_type(samples)} of shape "
                f"{tuple(samples.shape)}; they must be of one kind and shape."
            )
        count = int(np.prod(getattr(timesteps, "shape", ()) or (1,)))
        batch = samples.shape[0] if samples.ndim else 1
        if count not in (1, batch):
            raise ValueError(
                f"{timesteps_name} has {count} values but {samples_name} has {batch} samples; "
                "pass one timestep, or one per sample."
            )
        self.schedule  # noqa: B018 - builds the default schedule on first use
        if self._begin_index is None:
            ts = timesteps.detach().cpu().numpy() if _xp.is_torch(timesteps) else timesteps
            return [self.index_for_timestep(float(t)) for t in np.atleast_1d(np.asarray(ts))]
        k = self._step_index if self._step_index is not None else self._begin_index
        return [k] * count

    def __len__(self) -> int:
        return self.config["num_train_timesteps"]


def is_first_half(k: int) -> bool:
    """Whether model call ``k`` is the first (Euler) half of its step: the loop's one phase rule."""
    return k % 2 == 0


def _where(array: Any) -> str:
    """Name an array's kind: ``a numpy.ndarray``, ``a torch.Tensor``."""
    if isinstance(array, np.ndarray):
        return "a numpy.ndarray"
    return "a torch.Tensor" if _xp.is_torch(array) else a_type(array)
