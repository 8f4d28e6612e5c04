"""DPM2 ancestral for rectified-flow models (SD3, Flux): the schedule tables and the scheduler.

A flow model sees ``x_s = (1 - s) * x0 + s * noise`` at noise level ``s`` in ``[0, 1]`` and
predicts the velocity ``v = noise - x0``. :func:`flow_sigmas` gives the first-order noise
levels exactly as diffusers' ``FlowMatchEulerDiscreteScheduler`` (0.42.1) computes them for
the same config and ``set_timesteps`` arguments (static or resolution-dependent shift,
terminal stretch, Karras / exponential / Beta respacing, custom ``sigmas`` or
``timesteps``); :func:`make_flow_schedule` lays the DPM2-ancestral step out over two model
calls per step (:func:`kdpm2._math.flow_ancestral_split`), in float64; and
:class:`FlowMatchKDPM2AncestralSchedulerCore` is the thin state machine on top, sharing the
loop state of :class:`kdpm2.scheduler.SchedulerLoop`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import numpy as np

from . import _math, _xp, noise
from ._loop import SchedulerLoop, as_int, to_output
from ._validate import (
    MAX_ABS_MU,
    check_array,
    check_flow_levels,
    check_inference_steps,
    flow_levels_of,
    reject_unexpected,
    to_scalar,
    validate_flow_config,
)
from ._xp import A
from .config import register_to_config
from .output import KDPM2AncestralDiscreteSchedulerOutput
from .schedule import FrozenTables, beta_sigmas, exponential_sigmas, interleave, karras_sigmas
from .scheduler import SchedulerMixin

if TYPE_CHECKING:
    import torch

__all__ = [
    "FlowConfig",
    "FlowMatchKDPM2AncestralDiscreteScheduler",
    "FlowMatchKDPM2AncestralSchedulerCore",
    "FlowSchedule",
    "FlowStepLevels",
    "flow_sigmas",
    "make_flow_schedule",
]

TimeShiftType = Literal["exponential", "linear"]

# diffusers' flow-matching schedulers: configs of these load into each other
COMPATIBLES = [
    "FlowMatchEulerDiscreteScheduler",
    "FlowMatchHeunDiscreteScheduler",
    "FlowMatchLCMScheduler",
]


@dataclass(frozen=True)
class FlowConfig:
    """The flow scheduler's config and its defaults.

    ``FlowMatchEulerDiscreteScheduler``'s keys (same defaults) plus ``eta`` and ``s_noise``.
    The one place the defaults live: the constructor signature reads them from ``FLOW_DEFAULTS``.
    """

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float | None = 0.5
    max_shift: float | None = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    invert_sigmas: bool = False
    shift_terminal: float | None = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    time_shift_type: TimeShiftType = "exponential"
    eta: float = 1.0
    s_noise: float = 1.0

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> FlowConfig:
        """Read the known keys of a config mapping (others are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})


FLOW_DEFAULTS = FlowConfig()


def _train_sigmas(cfg: FlowConfig) -> np.ndarray:
    """Return the ``num_train_timesteps`` float32 noise levels diffusers' constructor builds."""
    t = cfg.num_train_timesteps
    sigmas = np.linspace(1, t, t, dtype=np.float32)[::-1] / t
    if not cfg.use_dynamic_shifting:
        sigmas = cfg.shift * sigmas / (1 + (cfg.shift - 1) * sigmas)
    return sigmas


def _time_shift(kind: str, mu: float, sigmas: np.ndarray) -> np.ndarray:
    """Resolution-dependent shift (``sigma = 1`` in diffusers' formula), in ``sigmas``' dtype."""
    if kind == "exponential":
        return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
    return mu / (mu + (1 / sigmas - 1) ** 1.0)


def flow_sigmas(
    cfg: FlowConfig,
    num_inference_steps: int | None = None,
    *,
    shift: float | None = None,
    sigmas: Sequence[float] | np.ndarray | None = None,
    mu: float | None = None,
    timesteps: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the first-order noise levels (float32, shape ``(N,)``) and given timesteps.

    The same values as ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (diffusers 0.42.1)
    gives its ``sigmas`` (before the terminal value) for the same config and arguments: the
    same operations in the same dtypes (float32 for given ``sigmas``/``timesteps``, float64
    for the default linspace). Arguments are checked by the caller.

    Returns
    -------
    sigmas : numpy.ndarray
        float32, decreasing noise levels in the non-inverted convention.
    timesteps : numpy.ndarray or None
        The given ``timesteps`` as float32, else ``None`` (then ``sigmas * T``).
    """
    t_train = cfg.num_train_timesteps
    shift = cfg.shift if shift is None else shift
    given_t = None if timesteps is None else np.array(timesteps).astype(np.float32)
    if sigmas is not None:
        s = np.array(sigmas).astype(np.float32)
    elif given_t is not None:
        s = given_t / t_train
    else:
        train = _train_sigmas(cfg)
        assert num_inference_steps is not None
        s = np.linspace(float(train[0]) * t_train, float(train[-1]) * t_train, num_inference_steps)
        s = s / t_train
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # checked by callers
        if cfg.use_dynamic_shifting:
            assert mu is not None
            s = _time_shift(cfg.time_shift_type, mu, s)
        else:
            s = shift * s / (1 + (shift - 1) * s)
        if cfg.shift_terminal and s[-1] != 1:  # all levels at 1 (N = 1): nothing to stretch
            one_minus = 1 - s
            s = 1 - one_minus / (one_minus[-1] / (1 - cfg.shift_terminal))
        n = len(s)
        lo, hi = float(s[-1]), float(s[0])
        if cfg.use_karras_sigmas:
            s = karras_sigmas(lo, hi, n)
        elif cfg.use_exponential_sigmas:
            s = exponential_sigmas(lo, hi, n)
        elif cfg.use_beta_sigmas:
            s = beta_sigmas(lo, hi, n)
    return np.asarray(s).astype(np.float32), given_t


class FlowStepLevels(NamedTuple):
    """One flow step's levels as Python floats (see :class:`kdpm2.schedule.StepLevels`)."""

    sigma: float
    sigma_mid: float
    sigma_down: float
    renoise: float
    scale: float


@dataclass(frozen=True, slots=True)
class FlowSchedule(FrozenTables):
    """Pure float64 tables of a flow DPM2-ancestral schedule of ``N`` steps.

    Internal noise levels ``s`` are in the convention ``x_s = (1 - s) * x0 + s * noise``;
    with ``invert_sigmas`` only what is shown (``exposed_sigmas``, ``timesteps``) and the sign
    of the velocity change (``velocity_sign``). Step ``i`` starts at ``sigmas[i]``, evaluates
    the model again at ``sigmas_mid[i]``, moves to ``sigmas_down[i]``, and is multiplied by
    ``scales[i]`` before ``renoise[i]`` of fresh noise brings it to ``sigmas[i + 1]``; the
    last step is one Euler call to 0. ``timesteps`` has one entry per model call (``2N - 1``:
    the first half of step ``i`` at ``2i``, its midpoint at ``2i + 1``).
    """

    num_inference_steps: int
    sigmas: np.ndarray  # (N + 1,) first-order noise levels, ending in 0
    sigmas_mid: np.ndarray  # (N,), 0 where sigma_down is
    sigmas_down: np.ndarray  # (N,)
    renoise: np.ndarray  # (N,) std of the fresh noise (before s_noise)
    scales: np.ndarray  # (N,) what the sample at sigma_down is multiplied by
    exposed_sigmas: np.ndarray  # (N + 1,) float32 values: diffusers' ``sigmas``
    timesteps: np.ndarray  # (2N - 1,) float32 values: the model's timesteps
    velocity_sign: float  # -1.0 with invert_sigmas: the model's velocity points the other way
    timesteps_dtype: str = "float32"

    @property
    def call_sigmas(self) -> np.ndarray:
        """The noise level of the sample at each model call, shape ``(2N - 1,)``."""
        return interleave(self.sigmas[:-1], self.sigmas_mid[:-1])

    def steps(self) -> list[FlowStepLevels]:
        """Return the per-step tables row by row, as Python floats: ``steps()[i]`` is step ``i``."""
        columns = (self.sigmas[:-1], self.sigmas_mid, self.sigmas_down, self.renoise, self.scales)
        return [FlowStepLevels(*row) for row in zip(*(c.tolist() for c in columns), strict=True)]


def make_flow_schedule(
    cfg: FlowConfig,
    first_order: np.ndarray,
    given_timesteps: np.ndarray | None = None,
) -> FlowSchedule:
    """Lay out the DPM2-ancestral steps through ``first_order`` noise levels (a terminal 0 added).

    Parameters
    ----------
    cfg : FlowConfig
        For ``eta``, ``s_noise``, ``invert_sigmas`` and ``num_train_timesteps``.
    first_order : numpy.ndarray
        float32, shape ``(N,)``, in ``(0, 1]``, non-increasing (see :func:`flow_sigmas`).
    given_timesteps : numpy.ndarray, optional
        The model's timesteps at the first halves (else ``first_order * T``; ignored with
        ``invert_sigmas``, as diffusers does); the midpoints' are always ``sigma_mid * T``.

    Examples
    --------
    >>> sch = make_flow_schedule(FlowConfig(), np.array([1.0, 0.5], np.float32))
    >>> sch.timesteps.tolist()  # eta = 1: the midpoint of 1 -> 0.5 is 0.5
    [1000.0, 500.0, 500.0]
    """
    t_train = cfg.num_train_timesteps
    s32 = np.asarray(first_order, np.float32)
    s = np.append(s32.astype(np.float64), 0.0)
    down, renoise, scale = _math.flow_ancestral_split(s[:-1], s[1:], cfg.eta)
    mid = _math.log_midpoint(s[:-1], down)
    mid32 = mid.astype(np.float32)
    if cfg.invert_sigmas:
        exposed = np.append(np.float32(1) - s32, np.float32(1))
        ts_first = (np.float32(1) - s32) * np.float32(t_train)
        ts_mid = (np.float32(1) - mid32) * np.float32(t_train)
    else:
        exposed = np.append(s32, np.float32(0))
        ts_first, ts_mid = s32 * np.float32(t_train), mid32 * np.float32(t_train)
    if given_timesteps is not None and not cfg.invert_sigmas:  # diffusers: inverted levels win
        ts_first = np.asarray(given_timesteps, np.float32)
    timesteps = interleave(ts_first.astype(np.float64), ts_mid[:-1].astype(np.float64))
    return FlowSchedule(
        num_inference_steps=len(s32),
        sigmas=s,
        sigmas_mid=np.asarray(mid),
        sigmas_down=np.asarray(down),
        renoise=np.asarray(renoise),
        scales=np.asarray(scale),
        exposed_sigmas=exposed.astype(np.float64),
        timesteps=timesteps,
        velocity_sign=-1.0 if cfg.invert_sigmas else 1.0,
    )


class FlowMatchKDPM2AncestralSchedulerCore(SchedulerLoop[FlowSchedule]):
    """The flow DPM2-ancestral state machine, without a config machinery.

    Loop state as in :class:`kdpm2.scheduler.SchedulerLoop`, plus the shift set with
    :meth:`set_shift`. A subclass supplies ``config``.
    """

    _compatibles: ClassVar[list[str]] = list(COMPATIBLES)

    def __init__(
        self,
        num_train_timesteps: int = FLOW_DEFAULTS.num_train_timesteps,
        shift: float = FLOW_DEFAULTS.shift,
        use_dynamic_shifting: bool = FLOW_DEFAULTS.use_dynamic_shifting,
        base_shift: float | None = FLOW_DEFAULTS.base_shift,
        max_shift: float | None = FLOW_DEFAULTS.max_shift,
        base_image_seq_len: int = FLOW_DEFAULTS.base_image_seq_len,
        max_image_seq_len: int = FLOW_DEFAULTS.max_image_seq_len,
        invert_sigmas: bool = FLOW_DEFAULTS.invert_sigmas,
        shift_terminal: float | None = FLOW_DEFAULTS.shift_terminal,
        use_karras_sigmas: bool = FLOW_DEFAULTS.use_karras_sigmas,
        use_exponential_sigmas: bool = FLOW_DEFAULTS.use_exponential_sigmas,
        use_beta_sigmas: bool = FLOW_DEFAULTS.use_beta_sigmas,
        time_shift_type: TimeShiftType = FLOW_DEFAULTS.time_shift_type,
        eta: float = FLOW_DEFAULTS.eta,
        s_noise: float = FLOW_DEFAULTS.s_noise,
    ) -> None:
        args = dict(locals())
        del args["self"]
        validate_flow_config(args)
        self._shift = float(shift)
        self._reset_loop()

    def _flow_config(self) -> FlowConfig:
        return FlowConfig.from_mapping(self.config)

    def _default_schedule(self) -> FlowSchedule:
        # the num_train_timesteps levels diffusers builds in its constructor (not inverted)
        cfg = dataclasses.replace(self._flow_config(), invert_sigmas=False)
        return make_flow_schedule(cfg, _train_sigmas(cfg))

    # ----------------------------------------------------------------- schedule and state
    @property
    def shift(self) -> float:
        """The static shift the next :meth:`set_timesteps` uses (config, or :meth:`set_shift`)."""
        return self._shift

    def set_shift(self, shift: float) -> None:
        """Use ``shift`` (a finite number > 0) from the next :meth:`set_timesteps` on."""
        validate_flow_config({**self.config, "shift": shift})
        self._shift = float(shift)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        sigmas: Sequence[float] | np.ndarray | None = None,
        mu: float | None = None,
        timesteps: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Build the schedule: ``N`` steps, ``2N - 1`` model calls.

        The first-order noise levels are ``FlowMatchEulerDiscreteScheduler``'s for the same
        config and arguments (diffusers 0.42.1); the midpoint calls are interleaved.

        Parameters
        ----------
        num_inference_steps : int, optional
            ``N >= 1``; may be left out when ``sigmas`` or ``timesteps`` are given.
        device : str or torch.device, optional
            Where ``timesteps`` should live (a torch tensor when given or when torch is in
            use, else a NumPy array).
        sigmas : sequence of float, optional
            Custom first-order noise levels in ``(0, 1]``, before the shift (Flux passes
            ``linspace(1, 1 / N, N)``).
        mu : float, optional
            Resolution-dependent shift; required with ``use_dynamic_shifting``.
        timesteps : sequence of float, optional
            Custom model timesteps of the first halves (the sigmas follow from them unless
            ``sigmas`` are given as well).

        Raises
        ------
        TypeError
            ``num_inference_steps`` is not an integer, or ``mu`` not a number.
        ValueError
            No step count, lengths that disagree, ``mu`` missing with dynamic shifting, or
            noise levels outside ``(0, 1]`` or increasing.
        """
        n = None
        if num_inference_steps is not None:
            n = check_inference_steps(as_int(num_inference_steps))
        custom_s = None if sigmas is None else flow_levels_of("sigmas", sigmas)
        custom_t = None if timesteps is None else flow_levels_of("timesteps", timesteps)
        lengths = {
            name: len(v)
            for name, v in (("sigmas", custom_s), ("timesteps", custom_t))
            if v is not None
        }
        if n is not None:
            lengths["num_inference_steps"] = n
        if not lengths:
            raise ValueError(
                "set_timesteps() needs num_inference_steps, sigmas or timesteps; pass the number "
                "of steps, e.g. set_timesteps(28)."
            )
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"the step counts disagree: {lengths}; sigmas and timesteps need one value per "
                "step."
            )
        cfg = self._flow_config()
        if cfg.use_dynamic_shifting:
            if mu is None:
                raise ValueError(
                    "mu is required because use_dynamic_shifting=True; pass the "
                    "resolution-dependent shift (pipelines compute it from the image size)."
                )
            mu = to_scalar("mu", mu, "a finite number")
            if not (math.isfinite(mu) and abs(mu) <= MAX_ABS_MU):
                raise ValueError(
                    f"mu={mu!r} is invalid; expected a finite number in [-{MAX_ABS_MU:g}, "
                    f"{MAX_ABS_MU:g}] (Flux's pipelines give about 0.5 to 1.2)."
                )
            if cfg.time_shift_type == "linear" and not mu > 0:
                raise ValueError(
                    f"mu={mu!r} is invalid with time_shift_type='linear'; expected a number > 0 "
                    "(the linear shift divides by mu + 1 / s - 1)."
                )
        count = check_inference_steps(next(iter(lengths.values())))
        first, given_t = flow_sigmas(
            cfg, count, shift=self._shift, sigmas=custom_s, mu=mu, timesteps=custom_t
        )
        source = "sigmas" if custom_s is not None else "the schedule"
        check_flow_levels(first, source)
        self._use(make_flow_schedule(cfg, first, given_t), device)

    @property
    def sigmas(self) -> Any:
        """First-order noise levels and the terminal value, shape ``(N + 1,)``, float32.

        The ``sigmas`` of diffusers' ``FlowMatchEulerDiscreteScheduler`` for the same arguments.
        """
        return to_output(self.schedule.exposed_sigmas, "float32")

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the initial noise: 1.0 (flow models start from unit noise)."""
        return 1.0

    # ----------------------------------------------------------------------- the loop
    def scale_model_input(self, sample: A, timestep: float | Any = None) -> A:
        """Return ``sample`` unchanged: flow models take the sample as it is."""
        check_array("sample", sample)
        return sample

    def step(
        self,
        model_output: Any,
        timestep: float | Any,
        sample: Any,
        generator: Any = None,
        return_dict: bool = True,
        **unexpected: Any,
    ) -> KDPM2AncestralDiscreteSchedulerOutput | tuple[Any]:
        """Advance the loop by one model call, given the model's velocity.

        Computes in float32 (or wider, if an input is) and returns the model output's dtype,
        as ``FlowMatchEulerDiscreteScheduler`` does; the sample kept between the halves of a
        step is held at that precision.

        Parameters
        ----------
        model_output : numpy.ndarray or torch.Tensor
            The velocity predicted at this call, shaped like ``sample``.
        timestep : float or tensor
            The current entry of ``timesteps`` (used only to find the start of the loop).
        sample : numpy.ndarray or torch.Tensor
            The current sample.
        generator : generator or list of generators, optional
            For the fresh noise of each second half (``torch.Generator`` for tensors,
            ``numpy.random.Generator`` for arrays; a list draws per sample). ``None`` draws
            from the global torch RNG, as diffusers' ancestral schedulers do in pipelines.
            No noise is drawn where its std is 0 (``eta = 0``).
        return_dict : bool
            Return an output object (default) or a tuple ``(prev_sample,)``.

        Returns
        -------
        KDPM2AncestralDiscreteSchedulerOutput or tuple
            ``prev_sample``, and ``pred_original_sample`` (``sample - sigma * v``, computed
            when first read).

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
        if unexpected:
            reject_unexpected("step", unexpected, list(self.config))
        k = self._begin_step(timestep, model_output, sample, generator)
        x, v = _xp.promote_to_compute(sample, model_output)
        sch = self._schedule
        assert sch is not None  # built by _call_index
        # Algorithm 2 over two calls, as in KDPM2AncestralDiscreteScheduler.step; the slope
        # dx/ds of x_s = (1 - s) x0 + s noise is the velocity noise - x0
        i, second_half = k // 2, k % 2  # (divmod breaks a compiled graph)
        step = self._levels(i, sample)
        level = step.sigma_mid if second_half else step.sigma  # the noise level of `sample`
        d = v if sch.velocity_sign > 0 else -v
        if not second_half:
            prev = _math.euler_half_step(x, d, step.sigma, step.sigma_mid)
        else:
            prev = _math.midpoint_step(self.sample, d, step.sigma, step.sigma_down)
            std = self.config["s_noise"] * step.renoise
            if not isinstance(step.scale, float) or step.scale != 1.0:
                prev *= step.scale  # prev is a fresh array
            if self._draws(i, std):  # no draw at eta = 0
                prev = _math.add_scaled(prev, noise.draw(prev, generator), std, in_place=True)
        self.sample = None if second_half else x
        self._step_index = k + 1
        out = _xp.cast(prev, model_output.dtype)
        if not return_dict:
            return (out,)
        return KDPM2AncestralDiscreteSchedulerOutput.deferred(
            out, lambda: _xp.cast(_math.add_scaled(x, d, -level), model_output.dtype)
        )

    def _draws(self, i: int, std: Any) -> bool:
        """Whether the second half of step ``i`` draws noise: where its std is positive.

        Under ``torch.compile`` (``std`` a tensor) the answer comes from the host table; when
        every step agrees it does not depend on ``i``, which then stays symbolic.
        """
        if isinstance(std, float):
            return std > 0.0
        s_noise = self.config["s_noise"]
        each = [s_noise * step.renoise > 0.0 for step in self._steps[:-1]]
        return each[0] if all(each) or not any(each) else each[i]

    def scale_noise(self, sample: A, timestep: Any, noise: A) -> A:
        """Noise clean samples to a timestep's level: ``sigma * noise + (1 - sigma) * sample``.

        What img2img and inpaint pipelines call. The level is that of the model call the
        loop is at: ``begin_index`` before the first step (img2img), the step index after it
        (inpaint), else the first step start whose timestep matches each value. A midpoint
        call's level is the midpoint's (the noise level of the sample the model sees there).

        Raises
        ------
        TimestepNotInScheduleError
            Without a begin index, a timestep that is not a step start.
        """
        idx = self._noising_indices("sample", sample, noise, "timestep", timestep)
        sch = self.schedule
        if max(idx) >= len(sch.call_sigmas):
            raise IndexError(
                f"scale_noise() was called after the last timestep (step index {max(idx)} of "
                f"{len(sch.call_sigmas)}); call set_timesteps() to start a new loop."
            )
        level = sch.call_sigmas[idx]
        if self.config["invert_sigmas"]:
            level = 1.0 - level
        sigma = _xp.like(level.astype(np.float32), sample)
        sigma = _xp.append_dims(
            sigma.to(sample.dtype) if _xp.is_torch(sample) else sigma.astype(sample.dtype),
            sample.ndim,
        )
        return sigma * noise + (1.0 - sigma) * sample


class FlowMatchKDPM2AncestralDiscreteScheduler(
    FlowMatchKDPM2AncestralSchedulerCore, SchedulerMixin
):
    r"""DPM-Solver-2 with ancestral noise ("DPM2 a") for rectified-flow models (SD3, Flux).

    A scheduler for diffusers' flow pipelines, in place of ``FlowMatchEulerDiscreteScheduler``
    (``from_config`` takes its config). Each step from ``s`` to ``s_next`` takes two model
    calls: an Euler half-step to the log midpoint of ``s`` and ``sigma_down``, a midpoint step
    to ``sigma_down``, a rescale by ``(1 - s_next) / (1 - sigma_down)`` and fresh noise of std
    ``renoise`` (:func:`kdpm2._math.flow_ancestral_split`; ComfyUI's flow variant of
    ``dpm_2_ancestral``). The last step is one Euler step to 0, so ``N`` steps take ``2N - 1``
    calls. ``step`` takes the model's velocity ``v = noise - x0``.

    Parameters
    ----------
    num_train_timesteps : int, default 1000
        ``T``: a noise level ``s`` is shown to the model as the timestep ``s * T``.
    shift : float, default 1.0
        Static shift ``s -> shift * s / (1 + (shift - 1) * s)`` (SD3 uses 3.0).
    use_dynamic_shifting : bool, default False
        Shift by ``mu`` given to ``set_timesteps`` instead (Flux).
    base_shift, max_shift, base_image_seq_len, max_image_seq_len
        Read by pipelines to compute ``mu`` from the image size.
    invert_sigmas : bool, default False
        Show inverted levels ``1 - s`` (and their timesteps) to the model, as diffusers does
        for models trained that way.
    shift_terminal : float, optional
        Stretch the shifted levels to end at this value.
    use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas : bool, default False
        Respace the levels between the first and last. At most one.
    time_shift_type : {"exponential", "linear"}, default "exponential"
        Form of the resolution-dependent shift.
    eta : float, default 1.0
        Amount of ancestral noise in ``[0, 1]``; 0 is deterministic DPM-Solver-2 on the flow ODE.
    s_noise : float, default 1.0
        Scale of the added noise.

    Notes
    -----
    **Differences from FlowMatchEulerDiscreteScheduler** (the README lists the same items;
    each is pinned by a test):

    - **Two calls per step.** ``order = 2`` and ``2N - 1`` timesteps, the midpoints
      interleaved; at ``eta = 1`` a midpoint's timestep equals the next step's, so after the
      first call the step index is counted, never looked up by value
      (``test_flow.py::test_scheduler_runs_with_repeated_timesteps_from_values``).
    - **Ancestral noise.** ``step`` adds fresh noise at each second half, from ``generator``
      or, as in pipelines (which pass none), the global torch RNG: seed it with
      ``torch.manual_seed`` to repeat an image. ``eta = 0`` draws nothing
      (``test_flow_pipelines.py::test_sd3_text_to_image``).
    - **Output.** ``return_dict=False`` gives ``(prev_sample,)`` as diffusers does; the
      output object also has ``pred_original_sample`` (``sample - sigma * v``, computed when
      first read). ``step`` has no ``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise`` or
      ``per_token_timesteps`` parameters: ``eta`` and ``s_noise`` are config keys, and
      ``stochastic_sampling`` is not one (``from_config`` drops it).
    - **scale_noise at a midpoint.** After a first half (inpaint pipelines call
      ``scale_noise`` after every step) the level is the midpoint's, the noise level of the
      sample at that point
      (``test_flow.py::test_scale_noise_maps_interleaved_indices_to_noise_levels``).
    - **No NaN.** ``shift_terminal`` with one step leaves the single level at 1 (diffusers
      divides 0 by 0); the renoise std is exactly 0 at ``eta = 0``
      (``test_flow_pipelines.py::test_shift_terminal_at_one_step_is_finite_where_diffusers_is_nan``).
    - **Errors at once.** ``set_timesteps()`` without a count, ``sigmas`` outside ``(0, 1]``
      or increasing, lengths that disagree, a non-finite ``mu``, and bad config values raise
      with a message naming the argument
      (``test_flow.py::test_set_timesteps_rejects_bad_arguments_with_a_clear_error``).
    - **Precision.** Computes in float32, or in float64 when an input is float64 (diffusers
      always uses float32), and returns the model output's dtype, as diffusers does
      (``test_flow.py::test_float32_state_and_model_dtype_output``).
    - **NumPy.** NumPy arrays work, with a ``numpy.random.Generator``
      (``test_flow.py::test_scheduler_equals_the_functional_sampler``).

    **Two forms, one behaviour.** Where diffusers (with torch) is installed,
    ``kdpm2.FlowMatchKDPM2AncestralDiscreteScheduler`` is a genuine diffusers scheduler built
    on the same core (``kdpm2._diffusers``), so pipelines save, load and swap it with
    diffusers' own code; without diffusers it is this class. ``step`` reads only host tables
    (no device sync); the first call finds the loop start without reading the timestep when
    the loop iterates ``timesteps`` or after ``set_begin_index``.

    Examples
    --------
    >>> import numpy as np
    >>> sch = FlowMatchKDPM2AncestralDiscreteScheduler(shift=3.0)
    >>> sch.set_timesteps(4)  # 7 model calls: order == 2
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((1, 2), dtype=np.float32)  # init_noise_sigma is 1
    >>> for t in sch.timesteps:
    ...     v = x / (float(t) / 1000)  # the exact velocity if every clean sample is 0
    ...     x = sch.step(v, t, x, generator=rng).prev_sample
    >>> len(sch.timesteps), x.dtype, bool(abs(x).max() < 1e-5)
    (7, dtype('float32'), True)
    """

    __init__ = register_to_config(FlowMatchKDPM2AncestralSchedulerCore.__init__)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"
