"""The scheduler: a thin state machine over the pure tables and the pure step math.

:class:`KDPM2AncestralSchedulerCore` is the state machine (schedule, step index, begin index,
the sample kept between the two halves of a step). The public class pairs it with a config
machinery: kdpm2's own (:class:`KDPM2AncestralDiscreteScheduler` here), or diffusers' own
when diffusers is installed (``kdpm2._diffusers``; ``kdpm2.KDPM2AncestralDiscreteScheduler``
names whichever applies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from . import _math, _xp, noise
from ._validate import (
    a_type,
    check_array,
    check_int,
    check_step_inputs,
    positive,
    timestep_value,
    validate_config,
)
from .config import ConfigMixin, register_to_config
from .output import KDPM2AncestralDiscreteSchedulerOutput
from .schedule import (
    DEFAULTS,
    BetaSchedule,
    PredictionType,
    Schedule,
    TimestepSpacing,
    make_schedule,
    train_schedule_from_config,
)

if TYPE_CHECKING:
    import torch

__all__ = [
    "KDPM2AncestralDiscreteScheduler",
    "KDPM2AncestralSchedulerCore",
    "SchedulerLoop",
    "SchedulerMixin",
    "TimestepNotInScheduleError",
]

# diffusers' KarrasDiffusionSchedulers names: configs of these load into each other
COMPATIBLES = [
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
    "DPMSolverSDEScheduler",
    "EDMEulerScheduler",
]


class TimestepNotInScheduleError(ValueError, IndexError):
    """A timestep handed to the scheduler is not one of ``scheduler.timesteps``.

    Subclasses both ``ValueError`` (it is bad input) and ``IndexError`` (what diffusers raises).
    """


def _as_int(value: Any) -> Any:
    """Read a 0-d integer tensor as a Python int (diffusers accepts one); anything else as is."""
    if _xp.is_torch(value) and value.ndim == 0 and not value.is_floating_point():
        return int(value)
    return value


def _to_output(values: np.ndarray, dtype: str, device: Any = None) -> Any:
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


class SchedulerLoop:
    """The loop state every kdpm2 scheduler shares: where a sampling loop stands.

    Two model calls per step, interleaved in ``timesteps`` (the first half of a step at an
    even index). State: the schedule (``_schedule``, replaced whole by ``set_timesteps``; any
    object with host tables ``timesteps`` and ``call_dt``, one entry per model call, a
    ``timesteps_dtype`` and ``num_inference_steps``), the output form of its timesteps
    (``_timesteps``: the tensor a loop iterates, kept so that its elements are recognised
    without reading their values, i.e. without a device sync), the step index, the begin
    index, and ``sample``, the sample kept between the two halves of a step. A subclass
    supplies ``config`` and :meth:`_default_schedule`.
    """

    order: ClassVar[int] = 2

    def _reset_loop(self) -> None:
        self._schedule: Any = None
        self._timesteps: Any = None
        self._step_index: int | None = None
        self._begin_index: int | None = None
        #: The sample at the start of the current step, kept between its two halves.
        self.sample: Any = None

    def _default_schedule(self) -> Any:
        """Return the schedule to use before ``set_timesteps`` (built on first use)."""
        raise NotImplementedError

    if TYPE_CHECKING:

        @property
        def config(self) -> Any:
            """The constructor's arguments (supplied by the config machinery)."""

    def _use(self, schedule: Any, device: Any) -> None:
        """Switch to ``schedule`` and reset the loop state (after it is built: no half state)."""
        timesteps = _to_output(schedule.timesteps, schedule.timesteps_dtype, device)
        self._schedule, self._timesteps = schedule, timesteps
        self._step_index = self._begin_index = None
        self.sample = None

    @property
    def schedule(self) -> Any:
        """The pure float64 tables behind the current schedule.

        Before ``set_timesteps``, the schedule the matching diffusers class builds in its
        constructor (built here on first use).
        """
        if self._schedule is None:
            self._use(self._default_schedule(), None)
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
        return _is_first_half(self._step_index or 0)

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
        if (
            getattr(timestep, "_base", None) is ts
            and timestep.ndim == 0
            and timestep.storage_offset() == ts.storage_offset()
        ):
            return 0
        return self.index_for_timestep(timestep)

    def _call_index(self, timestep: Any, method: str) -> int:
        """Index of this model call in ``timesteps`` (a loop's start is found on its first call)."""
        steps = (self._schedule or self.schedule).call_dt
        k = self._step_index
        if k is None:
            k = self._begin_index if self._begin_index is not None else self._start_index(timestep)
        if k >= len(steps):
            raise IndexError(
                f"{method}() was called after the last timestep (all {len(steps)} calls of the "
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
        if not _is_first_half(k) and self.sample is None:
            raise RuntimeError(
                f"step() at index {k} is the second half of a DPM2 step but the first half "
                "was not taken by this scheduler; start loops at an even index "
                "(set_begin_index(2 * k))."
            )
        return k

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


class KDPM2AncestralSchedulerCore(SchedulerLoop):
    """The DPM2-ancestral state machine, without a config machinery (see the module notes).

    State: the schedule (``_schedule``, replaced whole by :meth:`set_timesteps`), the output
    form of its timesteps (``_timesteps``: the tensor a loop iterates, kept so that its
    elements are recognised without reading their values, i.e. without a device sync), the
    step index, the begin index, and ``sample``, the sample kept between the two halves of a
    step. A subclass supplies ``config`` (a mapping of the constructor's arguments).
    """

    _compatibles: ClassVar[list[str]] = list(COMPATIBLES)

    def __init__(
        self,
        num_train_timesteps: int = DEFAULTS.num_train_timesteps,
        beta_start: float = DEFAULTS.beta_start,
        beta_end: float = DEFAULTS.beta_end,
        beta_schedule: BetaSchedule = DEFAULTS.beta_schedule,
        trained_betas: Sequence[float] | np.ndarray | None = None,
        use_karras_sigmas: bool = DEFAULTS.use_karras_sigmas,
        use_exponential_sigmas: bool = DEFAULTS.use_exponential_sigmas,
        use_beta_sigmas: bool = DEFAULTS.use_beta_sigmas,
        prediction_type: PredictionType = DEFAULTS.prediction_type,
        timestep_spacing: TimestepSpacing = DEFAULTS.timestep_spacing,
        steps_offset: int = DEFAULTS.steps_offset,
        eta: float = DEFAULTS.eta,
        s_noise: float = DEFAULTS.s_noise,
        discard_penultimate_sigma: bool = DEFAULTS.discard_penultimate_sigma,
    ) -> None:
        args = dict(locals())
        del args["self"]
        validate_config(args)
        # diffusers builds a num_train_timesteps-step schedule here; it is built on first use
        self._reset_loop()

    if TYPE_CHECKING:

        @property
        def config(self) -> Any:
            """The constructor's arguments (supplied by the config machinery)."""

    # ----------------------------------------------------------------- schedule and state
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        num_train_timesteps: int | None = None,
    ) -> None:
        """Build the schedule for ``num_inference_steps`` steps (``2 * N - 1`` model calls).

        Matches diffusers 0.42.1 ``set_timesteps`` (see the class notes for differences). The
        config is read now, so a config changed since the last call takes effect.

        Parameters
        ----------
        num_inference_steps : int
            ``N >= 1`` (a Python or NumPy integer, or a 0-d integer tensor).
        device : str or torch.device, optional
            Where ``timesteps`` should live. When given, or when torch has been imported,
            ``timesteps`` and ``sigmas`` are torch tensors; otherwise NumPy arrays.
        num_train_timesteps : int, optional
            Overrides the config's value for the timestep spacing.

        Raises
        ------
        TypeError
            ``num_inference_steps`` or ``num_train_timesteps`` is not an integer.
        ValueError
            ``num_inference_steps`` is below 1, or exceeds ``num_train_timesteps`` with
            ``leading``/``trailing`` spacing.
        """
        n = check_int(
            "num_inference_steps",
            _as_int(num_inference_steps),
            positive,
            "an integer >= 1 (the number of denoising steps)",
        )
        t_train = self.config["num_train_timesteps"]
        if num_train_timesteps is not None:
            t_train = check_int(
                "num_train_timesteps", _as_int(num_train_timesteps), positive, "an integer >= 1"
            )
        spacing = self.config["timestep_spacing"]
        n_built = n + 1 if self.config["discard_penultimate_sigma"] else n
        if spacing != "linspace" and n_built > t_train:
            raise ValueError(
                f"num_inference_steps={n} needs {n_built} distinct timesteps but "
                f"timestep_spacing={spacing!r} gives at most num_train_timesteps={t_train}; "
                "use fewer steps or timestep_spacing='linspace'."
            )
        self._use(make_schedule(self.config, int(n), int(t_train)), device)

    def _table(self, values: np.ndarray, dtype: str = "float32") -> Any:
        return _to_output(self.schedule.expanded(values), dtype)

    def _default_schedule(self) -> Schedule:
        # the num_train_timesteps-step schedule diffusers builds in its constructor
        t = self.config["num_train_timesteps"]
        return make_schedule(self.config, t, t)

    @property
    def schedule(self) -> Schedule:
        """The pure float64 tables behind the current schedule (see :class:`kdpm2.Schedule`).

        Before :meth:`set_timesteps`, the ``num_train_timesteps``-step schedule that diffusers
        builds in its constructor (built here on first use).
        """
        return super().schedule

    @property
    def sigmas(self) -> Any:
        """Step sigmas laid out per model call as diffusers does, shape ``(2N + 2,)``, float32."""
        return self._table(self.schedule.sigmas)

    @property
    def sigmas_interpol(self) -> Any:
        """Midpoint sigmas laid out per model call as diffusers does, shape ``(2N + 2,)``."""
        return self._table(np.append(self.schedule.sigmas_interpol, 0.0))

    @property
    def sigmas_up(self) -> Any:
        """Std of each step's fresh noise, laid out as diffusers does, shape ``(2N + 2,)``."""
        return self._table(np.append(self.schedule.sigmas_up, 0.0))

    @property
    def sigmas_down(self) -> Any:
        """Each step's deterministic target sigma, in diffusers' layout, shape ``(2N + 2,)``."""
        return self._table(np.append(self.schedule.sigmas_down, 0.0))

    @property
    def init_noise_sigma(self) -> Any:
        """Standard deviation of the initial noise: scale unit Gaussian noise by it (a float)."""
        return self.schedule.init_noise_sigma

    @property
    def betas(self) -> Any:
        """Training betas, shape ``(T,)``, float32."""
        return _to_output(train_schedule_from_config(self.config).betas, "float32")

    @property
    def alphas(self) -> Any:
        """``1 - betas``, shape ``(T,)``, float32."""
        betas = train_schedule_from_config(self.config).betas.astype(np.float32)
        return _to_output(np.float32(1) - betas, "float32")

    @property
    def alphas_cumprod(self) -> Any:
        """Cumulative products of ``1 - betas``, shape ``(T,)``, float32."""
        return _to_output(train_schedule_from_config(self.config).alphas_cumprod, "float32")

    @property
    def log_sigmas(self) -> Any:
        """``log`` of the training sigmas, shape ``(T,)``, float32."""
        return _to_output(train_schedule_from_config(self.config).log_sigmas, "float32")

    # ----------------------------------------------------------------------- the loop
    def scale_model_input(self, sample: Any, timestep: float | Any) -> Any:
        """Divide ``sample`` by ``sqrt(sigma**2 + 1)``, the model input scaling for this call.

        Matches diffusers 0.42.1 ``scale_model_input``.

        Parameters
        ----------
        sample : numpy.ndarray or torch.Tensor
            Shape ``(B, ...)``.
        timestep : float or tensor
            The current entry of ``timesteps`` (used only to find the start of the loop).

        Returns
        -------
        array
            Same type, shape and dtype as ``sample``.
        """
        if not isinstance(sample, np.ndarray) and not _xp.is_torch(sample):
            check_array("sample", sample)  # raises, naming what was given
        k = self._step_index = self._call_index(timestep, "scale_model_input")
        return sample / float(self._schedule.call_scales[k])

    def step(
        self,
        model_output: Any,
        timestep: float | Any,
        sample: Any,
        generator: Any = None,
        return_dict: bool = True,
    ) -> KDPM2AncestralDiscreteSchedulerOutput | tuple[Any, Any]:
        """Advance the loop by one model call.

        Matches diffusers 0.42.1 ``step``: the same numbers for the same inputs and generator,
        and the same random draws (one per second half-step, shaped like ``model_output``).

        Parameters
        ----------
        model_output : numpy.ndarray or torch.Tensor
            The network's output at this call, shape ``(B, ...)`` like ``sample``.
        timestep : float or tensor
            The current entry of ``timesteps`` (used only to find the start of the loop).
        sample : numpy.ndarray or torch.Tensor
            The current sample (the one *before* ``scale_model_input``).
        generator : generator or list of generators, optional
            ``torch.Generator`` for tensors, ``numpy.random.Generator`` for arrays; a list draws
            per sample. See :mod:`kdpm2.noise` for what happens with ``None``.
        return_dict : bool
            Return an output object (default) or a tuple ``(prev_sample, pred_original_sample)``.

        Returns
        -------
        KDPM2AncestralDiscreteSchedulerOutput or tuple

        Raises
        ------
        IndexError
            Called after the last timestep.
        TimestepNotInScheduleError
            The first call's ``timestep`` is not in the schedule.
        ValueError, TypeError
            Mismatched shapes or types, a non-float sample, a wrong generator.
        RuntimeError
            A second half-step whose first half this scheduler did not take.
        """
        k = self._begin_step(timestep, model_output, sample, generator)
        if isinstance(sample, np.ndarray) and model_output.dtype != sample.dtype:
            # NumPy: the sample's dtype wins (on tensors the arithmetic promotes, as diffusers)
            model_output = model_output.astype(sample.dtype)
        first_half = _is_first_half(k)
        start = sample if first_half else self.sample
        sch = self._schedule
        assert sch is not None  # built by _call_index
        sigma = float(sch.call_sigmas[k])
        prediction_type = self.config["prediction_type"]
        if prediction_type == "epsilon":  # the slope (x - x0) / sigma is the model output
            x0, d = None, model_output
        else:
            x0 = _math.predict_x0(model_output, sample, sigma, prediction_type)
            d = _math.to_d(sample, sigma, x0)
        prev = _math.add_scaled(start, d, float(sch.call_dt[k]))
        if not first_half:  # fresh noise, drawn even when its std is 0 (the generator advances)
            fresh = noise.draw(model_output, generator)
            prev = _math.add_scaled(prev, fresh, float(sch.call_noise_std[k]), in_place=True)
        self.sample = sample if first_half else None
        self._step_index = k + 1
        if x0 is not None:
            return (
                (prev, x0) if not return_dict else KDPM2AncestralDiscreteSchedulerOutput(prev, x0)
            )
        if not return_dict:
            return prev, _math.predict_x0(model_output, sample, sigma, prediction_type)
        # x0 only if read (the inputs must not be changed in place before then, as for the
        # sample kept between the halves): see KDPM2AncestralDiscreteSchedulerOutput.deferred
        return KDPM2AncestralDiscreteSchedulerOutput.deferred(
            prev, lambda: _math.predict_x0(model_output, sample, sigma, prediction_type)
        )

    def add_noise(self, original_samples: Any, noise: Any, timesteps: Any) -> Any:
        """Noise clean samples to the level of ``timesteps``: ``x0 + sigma(t) * noise``.

        Matches diffusers 0.42.1 ``add_noise`` (including how it picks the index once a loop
        has a begin or step index).

        Parameters
        ----------
        original_samples, noise : array
            Shape ``(B, ...)``.
        timesteps : array or tensor of shape ``(B,)`` (or a scalar)
            Entries of ``scheduler.timesteps``.

        Raises
        ------
        TimestepNotInScheduleError
            A timestep is not in the schedule.
        """
        idx = self._noising_indices(
            "original_samples", original_samples, noise, "timesteps", timesteps
        )
        sch = self.schedule
        sigma = sch.expanded(sch.sigmas).astype(np.float32)[idx]
        sigma = _xp.append_dims(_xp.like(sigma, original_samples), original_samples.ndim)
        return original_samples + noise * sigma


def _is_first_half(k: int) -> bool:
    """Whether model call ``k`` is the first (Euler) half of its step: the loop's one phase rule."""
    return k % 2 == 0


class SchedulerMixin(ConfigMixin):
    """Base of kdpm2's own schedulers: kdpm2's config machinery (used without diffusers).

    Where diffusers is installed, ``kdpm2.SchedulerMixin`` is diffusers' ``SchedulerMixin``
    instead, and ``kdpm2.KDPM2AncestralDiscreteScheduler`` derives from it (``kdpm2._diffusers``).
    """


class KDPM2AncestralDiscreteScheduler(KDPM2AncestralSchedulerCore, SchedulerMixin):
    r"""DPM-Solver-2 with ancestral noise ("DPM2 a"), compatible with diffusers 0.42.1.

    Each step of the schedule takes two model calls: an Euler half-step from ``sigma`` to the
    log midpoint, then a midpoint step to ``sigma_down``, then fresh noise of std ``sigma_up``
    (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
    Algorithm 2, with ancestral sampling as in k-diffusion's ``sample_dpm_2_ancestral``). The
    last step is a single Euler step to ``sigma = 0``. Sigmas use the variance-exploding
    convention ``x_t = x_0 + sigma_t * noise``.

    Works on torch tensors (any device and float dtype) and on NumPy arrays; torch is never
    imported by this class.

    Parameters
    ----------
    num_train_timesteps : int, default 1000
        Number of training timesteps ``T``.
    beta_start, beta_end : float, default 0.00085, 0.012
        First and last beta of the ``linear``/``scaled_linear`` schedules, in ``(0, 1)``.
    beta_schedule : {"linear", "scaled_linear", "squaredcos_cap_v2"}, default "linear"
        Beta spacing (``squaredcos_cap_v2``: Nichol & Dhariwal 2021).
    trained_betas : sequence of float, optional
        Explicit betas, one per training timestep, each in ``(0, 1)``.
    use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas : bool, default False
        Respace the sigmas (Karras et al. eq. 5; log-linear; Beta(0.6, 0.6) quantiles, which
        needs scipy). At most one.
    prediction_type : {"epsilon", "v_prediction", "sample"}, default "epsilon"
        What the network predicts: the noise, ``v`` (Salimans & Ho 2022), or ``x0`` itself.
    timestep_spacing : {"linspace", "leading", "trailing"}, default "linspace"
        How inference timesteps are spread (Lin et al. 2023, Table 2).
    steps_offset : int, default 0
        Added to ``leading`` timesteps.
    eta : float, default 1.0
        Amount of ancestral noise in ``[0, 1]``; 0 is deterministic DPM2 (k-diffusion's ``eta``).
    s_noise : float, default 1.0
        Scale of the added noise (k-diffusion's ``s_noise``).
    discard_penultimate_sigma : bool, default False
        Build the schedule for ``N + 1`` steps and drop the next-to-last sigma, as A1111 does
        for DPM2 samplers and ComfyUI's KSampler; avoids the over-sharpened last step.

    Notes
    -----
    **Differences from diffusers** (the README lists the same items; each is pinned by a test):

    - **No NaN.** Where diffusers' float32 ancestral split takes the square root of a negative
      number (``squaredcos_cap_v2`` at <= 10 steps), or carries more than 0.1 % rounding
      noise (one to three steps), the exact float64 value is used
      (``test_schedule.py::test_squaredcos_small_n_is_finite``; the parity test counts those
      configs). Where ``alphas_cumprod`` underflows float32 (diffusers: infinite sigmas) it is
      floored at the smallest normal float32 (``test_finite.py``). ``sigmas_up`` is padded
      with 0 where diffusers has the NaN of ``0 / 0`` (``test_pipelines.py``).
    - **Loop start.** A loop without ``set_begin_index`` starts at the first even index whose
      timestep matches (a step start); diffusers takes the second match, which differs only
      when the first timestep repeats (``squaredcos_cap_v2`` with Karras sigmas), where
      diffusers then runs past the end of its tables (``parity/test_diffusers_parity.py``).
    - **Trailing spacing.** ``trailing`` spacing gives diffusers' timesteps whenever
      diffusers' float ``arange`` gives ``N`` of them, and exactly ``N`` steps where it gives
      ``N + 1`` (``parity/test_diffusers_parity.py::test_trailing_timesteps_match_diffusers``,
      ``test_schedule.py::test_tables_are_finite_and_well_formed``).
    - **Deferred x0.** With ``return_dict=True`` and an epsilon model,
      ``pred_original_sample`` is computed when first read, from the step's inputs (which, as
      for the sample kept between half-steps, must not be changed in place before that); it
      saves one kernel per call when only ``prev_sample`` is read
      (``test_pipelines.py::test_step_output_behaves_like_diffusers_output``).
    - **prediction_type="sample".** It works (diffusers raises ``NotImplementedError``).
    - **NumPy.** NumPy arrays work, with a ``numpy.random.Generator`` for the noise; the
      output has the sample's dtype (a model output in another dtype is cast to it first;
      diffusers' tensor path promotes) (``test_dtypes.py``).
    - **Errors at once.** Unknown options raise at construction (diffusers notices a bad
      ``prediction_type`` only at the first step), as do ``set_timesteps(0)``, betas outside
      (0, 1), ``trained_betas`` whose length is not ``num_train_timesteps`` (so diffusers'
      ``test_trained_betas``, which passes 2 betas with 1100 training steps, is the one test
      of its file this class fails: ``test_diffusers_suite.py``), ``step`` after the last
      timestep, a timestep not in the schedule (``TimestepNotInScheduleError``, also an
      ``IndexError``), shape mismatches, generators of the wrong kind, and
      ``num_inference_steps > num_train_timesteps`` with ``leading``/``trailing`` spacing. A
      failed call leaves the scheduler unchanged (``docs/errors.md``, run by
      ``test_errors_table.py``).
    - **Lazy training schedule.** The constructor does not build the
      ``num_train_timesteps``-step schedule (diffusers does, in Python loops); a scheduler
      used before ``set_timesteps`` builds it on first use, with the same result
      (``test_scheduler.py::test_a_fresh_scheduler_steps_on_the_training_schedule``).
    - **No device sync.** ``step`` reads only host-side tables: no ``.item()``, no
      ``nonzero()``. The start index needs no read either when the loop iterates over
      ``timesteps`` (the pipeline loop) or after ``set_begin_index``; any other first
      timestep is looked up by value, which reads it once (``benchmarks/gpu_check.py``).
    - **Extra config keys.** ``eta``, ``s_noise`` and ``discard_penultimate_sigma``; their
      defaults give diffusers' numbers. diffusers ignores them (with a logged warning) when
      its own class loads a config saved by kdpm2 (``test_config.py``).
    - **Checked config values.** A string ``"false"`` for a boolean key raises ``TypeError``
      instead of counting as true (``test_errors_table.py``, row 11).

    **Two forms, one behaviour.** Where diffusers (with torch) is installed,
    ``kdpm2.KDPM2AncestralDiscreteScheduler`` is a genuine diffusers scheduler
    (``kdpm2._diffusers``: it derives from diffusers' ``SchedulerMixin`` and ``ConfigMixin``,
    so its config, ``from_config``, ``from_pretrained``, ``save_pretrained``, config attribute
    access and ``compatibles`` are diffusers' own code, and ``init_noise_sigma`` is a 0-d
    float32 tensor, as diffusers gives it). Without diffusers it is this class, with
    kdpm2's own config machinery (:mod:`kdpm2.config`: the same files, ``init_noise_sigma``
    a Python float, unknown keys named in one warning, load errors that name the file and
    the key). Both run the same state machine, :class:`KDPM2AncestralSchedulerCore`.

    Examples
    --------
    >>> import numpy as np
    >>> sch = KDPM2AncestralDiscreteScheduler()
    >>> sch.set_timesteps(4)
    >>> rng = np.random.default_rng(0)
    >>> x = float(sch.init_noise_sigma) * rng.standard_normal((1, 2), dtype=np.float32)
    >>> for t in sch.timesteps:
    ...     eps = sch.scale_model_input(x, t) * 0.0  # a model that always predicts zero noise
    ...     x = sch.step(eps, t, x, generator=rng).prev_sample
    >>> x.dtype, len(sch.timesteps)
    (dtype('float32'), 7)
    """

    __init__ = register_to_config(KDPM2AncestralSchedulerCore.__init__)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
