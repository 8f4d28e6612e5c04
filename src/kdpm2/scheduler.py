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
from ._loop import SchedulerLoop, TimestepNotInScheduleError, as_int, to_output
from ._validate import (
    check_array,
    check_inference_steps,
    check_train_timesteps,
    reject_unexpected,
    validate_config,
)
from ._xp import A
from .config import ConfigMixin, register_to_config
from .output import KDPM2AncestralDiscreteSchedulerOutput
from .schedule import (
    DEFAULTS,
    BetaSchedule,
    PredictionType,
    Schedule,
    ScheduleConfig,
    TimestepSpacing,
    TrainSchedule,
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


class KDPM2AncestralSchedulerCore(SchedulerLoop[Schedule]):
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
        n = check_inference_steps(as_int(num_inference_steps))
        t_train = self.config["num_train_timesteps"]
        if num_train_timesteps is not None:
            t_train = check_train_timesteps(as_int(num_train_timesteps))
        spacing = self.config["timestep_spacing"]
        n_built = n + 1 if self.config["discard_penultimate_sigma"] else n
        if spacing != "linspace" and n_built > t_train:
            raise ValueError(
                f"num_inference_steps={n} needs {n_built} distinct timesteps but "
                f"timestep_spacing={spacing!r} gives at most num_train_timesteps={t_train}; "
                "use fewer steps or timestep_spacing='linspace'."
            )
        record, train = self._from_config()
        self._use(make_schedule(record, int(n), int(t_train), train=train), device)

    def _from_config(self) -> tuple[ScheduleConfig, TrainSchedule]:
        """Return the config record and training tables, built once per (frozen) config.

        Reading them from the config mapping again costs O(T) each time: 0.1 s per call with
        a million ``trained_betas``.
        """
        config = self.config
        cached = self.__dict__.get("_config_tables")
        if cached is None or cached[0] is not config:
            record = ScheduleConfig.from_mapping(config)
            cached = (config, record, train_schedule_from_config(record))
            self.__dict__["_config_tables"] = cached
        return cached[1], cached[2]

    def _table(self, values: np.ndarray, dtype: str = "float32") -> Any:
        return to_output(self.schedule.expanded(values), dtype)

    def _default_schedule(self) -> Schedule:
        # the num_train_timesteps-step schedule diffusers builds in its constructor
        record, train = self._from_config()
        t = record.num_train_timesteps
        return make_schedule(record, t, t, train=train)

    @property
    def sigmas(self) -> Any:
        """Step sigmas laid out per model call as diffusers does, shape ``(2N + 2,)``, float32."""
        return self._table(self.schedule.sigmas)

    @property
    def sigmas_interpol(self) -> Any:
        """Midpoint sigmas laid out per model call as diffusers does, shape ``(2N + 2,)``."""
        return self._table(np.append(self.schedule.sigmas_mid, 0.0))

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
        return to_output(self._from_config()[1].betas, "float32")

    @property
    def alphas(self) -> Any:
        """``1 - betas``, shape ``(T,)``, float32."""
        betas = self._from_config()[1].betas.astype(np.float32)
        return to_output(np.float32(1) - betas, "float32")

    @property
    def alphas_cumprod(self) -> Any:
        """Cumulative products of ``1 - betas``, shape ``(T,)``, float32."""
        return to_output(self._from_config()[1].alphas_cumprod, "float32")

    @property
    def log_sigmas(self) -> Any:
        """``log`` of the training sigmas, shape ``(T,)``, float32."""
        return to_output(self._from_config()[1].log_sigmas, "float32")

    # ----------------------------------------------------------------------- the loop
    def scale_model_input(self, sample: A, timestep: float | Any) -> A:
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
        if not (
            sample.dtype.kind == "f"
            if isinstance(sample, np.ndarray)
            else (_xp.is_torch(sample) and sample.is_floating_point())
        ):
            check_array("sample", sample)  # raises, naming what was given
        k = self._step_index = self._call_index(timestep, "scale_model_input")
        step = self._levels(k // 2, sample)
        return sample / (step.scale_mid if k % 2 else step.scale_start)

    def step(
        self,
        model_output: Any,
        timestep: float | Any,
        sample: Any,
        generator: Any = None,
        return_dict: bool = True,
        **unexpected: Any,
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
        if unexpected:
            reject_unexpected("step", unexpected, list(self.config))
        k = self._begin_step(timestep, model_output, sample, generator)
        if isinstance(sample, np.ndarray) and model_output.dtype != sample.dtype:
            # NumPy: the sample's dtype wins (on tensors the arithmetic promotes, as diffusers)
            model_output = model_output.astype(sample.dtype)
        # Algorithm 2 over two calls: call 2i starts step i at sigma (an Euler half-step to the
        # log midpoint), call 2i + 1 evaluates the model there (the midpoint step from the
        # step's start to sigma_down, then fresh noise). The last step is one Euler call to 0.
        i, second_half = k // 2, k % 2  # (divmod breaks a compiled graph)
        step = self._levels(i, sample)
        level = step.sigma_mid if second_half else step.sigma  # the noise level of `sample`
        prediction_type = self.config["prediction_type"]
        if prediction_type == "epsilon":  # d = (x - x0) / sigma is the predicted noise itself
            x0, d = None, model_output
        else:
            x0 = _math.predict_x0(model_output, sample, level, prediction_type)
            d = _math.to_d(sample, level, x0)
        if not second_half:
            prev = _math.euler_half_step(sample, d, step.sigma, step.sigma_mid)
        else:
            prev = _math.midpoint_step(self.sample, d, step.sigma, step.sigma_down)
            # drawn even when its std is 0, as diffusers draws it (the generator advances)
            fresh = noise.draw(model_output, generator)
            std = self.config["s_noise"] * step.sigma_up
            prev = _math.add_scaled(prev, fresh, std, in_place=True)
        self.sample = None if second_half else sample
        self._step_index = k + 1
        if x0 is not None:
            return (
                (prev, x0) if not return_dict else KDPM2AncestralDiscreteSchedulerOutput(prev, x0)
            )
        if not return_dict:
            return prev, _math.predict_x0(model_output, sample, level, prediction_type)
        # x0 only if read (the inputs must not be changed in place before then, as for the
        # sample kept between the halves): see KDPM2AncestralDiscreteSchedulerOutput.deferred
        return KDPM2AncestralDiscreteSchedulerOutput.deferred(
            prev, lambda: _math.predict_x0(model_output, sample, level, prediction_type)
        )

    def add_noise(self, original_samples: A, noise: A, timesteps: Any) -> A:
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
      ``num_inference_steps > num_train_timesteps`` with ``leading``/``trailing`` spacing.
      Limits diffusers does not have keep the work bounded: ``num_train_timesteps`` <= 1e6,
      ``num_inference_steps`` <= 1e5, ``steps_offset`` <= ``num_train_timesteps``, and a
      beta that vanishes in float32's ``1 - beta`` (diffusers: NaN timesteps) is refused; a
      batch that changes between a step's two calls and a complex model output raise. A
      failed call leaves the scheduler unchanged (``docs/errors.md``, run by
      ``test_errors_table.py``).
    - **Lazy training schedule.** The constructor does not build the
      ``num_train_timesteps``-step schedule (diffusers does, in Python loops); a scheduler
      used before ``set_timesteps`` builds it on first use, with the same result
      (``test_scheduler.py::test_a_fresh_scheduler_steps_on_the_training_schedule``).
    - **No device sync.** ``step`` reads only host-side tables: no ``.item()``, no
      ``nonzero()``. The start index needs no read either when the loop iterates over
      ``timesteps`` (the pipeline loop) or after ``set_begin_index``; any other first
      timestep is looked up by value, which reads it once. A CPU generator with CUDA
      latents draws into pinned memory and copies without blocking, with the same numbers
      (``benchmarks/gpu_check.py``, ``test_noise.py``).
    - **torch.compile.** A step compiles without graph breaks and a pipeline loop compiles
      whole (``fullgraph=True``); a compiled ``step`` is compiled a few times per loop, not
      once per step (its levels then come from a table on the sample's device). Compiled
      arithmetic rounds ``x + a * y`` twice where eager's ``torch.add(x, y, alpha=a)``
      fuses it (diffusers' own eager rounding), so compiled numbers are the eager ones to
      float rounding. A compiled loop without ``set_begin_index`` starts at
      ``timesteps[0]``, checked on the device; diffusers looks its start up with a graph
      break (``test_compile.py``).
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
