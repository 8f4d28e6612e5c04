"""``KDPM2AncestralDiscreteScheduler``: a thin state machine over the pure tables and step math."""

from __future__ import annotations

import functools
import math
import numbers
import sys
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from . import _math, _xp, noise
from .config import ConfigMixin
from .schedule import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    Schedule,
    TrainSchedule,
    make_schedule,
    make_train_schedule,
)

__all__ = [
    "KDPM2AncestralDiscreteScheduler",
    "KDPM2AncestralDiscreteSchedulerOutput",
    "SchedulerMixin",
    "TimestepNotInScheduleError",
]

# diffusers' KarrasDiffusionSchedulers names: configs of these load into each other
_COMPATIBLES = [
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


class KDPM2AncestralDiscreteSchedulerOutput:
    """Result of :meth:`KDPM2AncestralDiscreteScheduler.step`.

    Behaves like diffusers' outputs: attribute access, ``out[0]`` / ``out["prev_sample"]``,
    ``keys()``, ``values()``, ``items()`` and ``to_tuple()``.

    ``pred_original_sample`` is computed from the step's ``model_output`` and ``sample`` when it
    is first read (pipelines rarely read it, and computing it costs two kernels per call); as
    for the sample the scheduler keeps between the two halves of a step, those inputs must not
    be modified in place before then.

    Attributes
    ----------
    prev_sample : array
        The sample for the next model call, shape ``(B, ...)``, the input's type and dtype.
    pred_original_sample : array
        The denoised estimate ``x0`` from this call's model output.
    """

    __slots__ = ("_x0", "_x0_args", "prev_sample")
    _names = ("prev_sample", "pred_original_sample")

    def __init__(
        self, prev_sample: Any, pred_original_sample: Any = None, _x0_args: Any = None
    ) -> None:
        self.prev_sample = prev_sample
        self._x0 = pred_original_sample
        self._x0_args = _x0_args

    @property
    def pred_original_sample(self) -> Any:
        """The denoised estimate ``x0`` (computed on first access)."""
        if self._x0 is None and self._x0_args is not None:
            self._x0 = _math.predict_x0(*self._x0_args)
            self._x0_args = None
        return self._x0

    @pred_original_sample.setter
    def pred_original_sample(self, value: Any) -> None:
        self._x0, self._x0_args = value, None

    def to_tuple(self) -> tuple[Any, ...]:
        """Return the fields that are not ``None``, in order."""
        return tuple(v for v in (self.prev_sample, self.pred_original_sample) if v is not None)

    def keys(self) -> list[str]:
        """Names of the fields that are not ``None``."""
        return [name for name in self._names if getattr(self, name) is not None]

    def values(self) -> list[Any]:
        """Values of the fields that are not ``None``."""
        return list(self.to_tuple())

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs of the fields that are not ``None``."""
        return list(zip(self.keys(), self.values(), strict=True))

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return OrderedDict(self.items())[key]
        return self.to_tuple()[key]

    def __iter__(self) -> Any:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(prev_sample={self.prev_sample!r}, "
            f"pred_original_sample={self.pred_original_sample!r})"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not supported; expected one of {accepted}.")


def _check_number(name: str, value: object, accepted: str) -> None:
    if not _is_real(value):
        raise TypeError(f"{name}={value!r} is a {type(value).__name__}; expected {accepted}.")


def _check_bool(name: str, value: object) -> None:
    # a JSON string such as "false" is truthy: accepting it would silently flip the option
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name}={value!r} is a {type(value).__name__}; expected True or False.")


def _check_fraction(name: str, value: object) -> float:
    _check_number(name, value, "a number in (0, 1)")
    if not 0.0 < float(value) < 1.0:  # type: ignore[arg-type]
        raise ValueError(f"{name}={value!r} is outside (0, 1); a beta is a variance fraction.")
    return float(value)  # type: ignore[arg-type]


def _validate(cfg: dict[str, Any]) -> None:
    """Raise for any constructor argument that cannot give a valid schedule."""
    _check_choice("beta_schedule", cfg["beta_schedule"], BETA_SCHEDULES)
    _check_choice("prediction_type", cfg["prediction_type"], PREDICTION_TYPES)
    _check_choice("timestep_spacing", cfg["timestep_spacing"], TIMESTEP_SPACINGS)
    t = cfg["num_train_timesteps"]
    if not _is_int(t) or t < 1:
        raise ValueError(f"num_train_timesteps={t!r} is invalid; expected an integer >= 1.")
    betas = cfg["trained_betas"]
    if betas is not None:
        arr = np.asarray(betas, dtype=np.float64) if not isinstance(betas, str) else None
        if arr is None or arr.ndim != 1 or len(arr) != t:
            got = "a string" if arr is None else f"shape {arr.shape}"
            raise ValueError(
                f"trained_betas has {got} but num_train_timesteps={t}; pass one beta per "
                f"training timestep (a 1-D sequence of length {t})."
            )
        if not np.all((arr > 0) & (arr < 1)):
            bad = float(arr[~((arr > 0) & (arr < 1))][0])
            raise ValueError(
                f"trained_betas contains {bad!r}, outside (0, 1); every beta must be a variance "
                "fraction strictly between 0 and 1."
            )
    elif cfg["beta_schedule"] != "squaredcos_cap_v2":
        start = _check_fraction("beta_start", cfg["beta_start"])
        end = _check_fraction("beta_end", cfg["beta_end"])
        if start > end:
            raise ValueError(
                f"beta_start={start!r} is larger than beta_end={end!r}; betas must not decrease."
            )
    for key in (
        "use_karras_sigmas",
        "use_exponential_sigmas",
        "use_beta_sigmas",
        "discard_penultimate_sigma",
    ):
        _check_bool(key, cfg[key])
    chosen = [k for k in ("karras", "exponential", "beta") if cfg[f"use_{k}_sigmas"]]
    if len(chosen) > 1:
        raise ValueError(
            f"use_{chosen[0]}_sigmas and use_{chosen[1]}_sigmas are both True; choose at most "
            "one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas."
        )
    if cfg["use_beta_sigmas"]:
        try:
            import scipy.special  # noqa: F401
        except ImportError:
            raise ImportError(
                "use_beta_sigmas=True needs scipy; install it with `pip install scipy`."
            ) from None
    off = cfg["steps_offset"]
    if not _is_int(off) or off < 0:
        raise ValueError(f"steps_offset={off!r} is invalid; expected an integer >= 0.")
    eta = cfg["eta"]
    _check_number("eta", eta, "a number in [0, 1]")
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(
            f"eta={eta!r} is outside [0, 1]; 0 is deterministic DPM2, 1 full ancestral noise."
        )
    s_noise = cfg["s_noise"]
    _check_number("s_noise", s_noise, "a finite number >= 0")
    if not (math.isfinite(s_noise) and s_noise >= 0):
        raise ValueError(f"s_noise={s_noise!r} is invalid; expected a finite number >= 0.")


class SchedulerMixin(ConfigMixin):
    """Base of kdpm2's schedulers: the config machinery, plus what diffusers pipelines need.

    diffusers' ``DiffusionPipeline.from_pretrained`` reads a component's ``[module, class]``
    from ``model_index.json`` and picks its load method by checking the class against a class
    named ``SchedulerMixin`` in that module; ``kdpm2.SchedulerMixin`` is that class for kdpm2.

    ``DiffusionPipeline.save_pretrained`` saves a component only if its class derives from
    diffusers' own ``SchedulerMixin``. ``import kdpm2`` never imports diffusers, so the public
    class cannot derive from it. Instead, while diffusers is imported, creating a
    :class:`KDPM2AncestralDiscreteScheduler` (by construction, ``from_config`` or
    ``from_pretrained``, or by copying or unpickling a saveable one) gives an instance of a
    subclass that also derives from diffusers' ``SchedulerMixin`` (built by
    ``kdpm2._diffusers``), the way ``pathlib.Path(...)`` gives a ``PosixPath``. That subclass
    changes no behaviour; it only makes the scheduler saveable.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """Create the instance, of the diffusers-saveable subclass while diffusers is imported."""
        # ``__new__`` lives here, not on the public class, so that ``inspect.signature`` of
        # the public class still shows its ``__init__``.
        target: type[Any] | None = None
        if cls is KDPM2AncestralDiscreteScheduler and sys.modules.get("diffusers") is not None:
            from ._diffusers import saveable_class

            target = saveable_class()
        return object.__new__(target or cls)


class KDPM2AncestralDiscreteScheduler(SchedulerMixin):
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
    **Differences from diffusers** (each pinned by a test in ``tests/``):

    - No NaN: where diffusers' float32 ancestral split takes the square root of a negative
      number (``squaredcos_cap_v2`` at <= 10 steps), or carries more than 0.1 % rounding
      noise (one to three steps), the exact float64 value is used
      (``test_schedule.py::test_squaredcos_small_n_is_finite``; the parity test counts those
      configs). Where ``alphas_cumprod`` underflows float32 (diffusers: infinite sigmas) it is
      floored at the smallest normal float32 (``test_finite.py``).
    - A loop without ``set_begin_index`` starts at the first even index whose timestep
      matches (a step start); diffusers takes the second match, which differs only when the
      first timestep repeats (``squaredcos_cap_v2`` with Karras sigmas), where diffusers then
      runs past the end of its tables (``parity/test_diffusers_parity.py``).
    - ``trailing`` spacing always gives exactly ``N`` steps (diffusers' float ``arange`` can
      give ``N + 1``) (``test_schedule.py::test_tables_are_finite_and_well_formed``).
    - ``pred_original_sample`` is computed when first read, from the step's inputs (which,
      as for the sample kept between half-steps, must not be changed in place before that).
    - ``prediction_type="sample"`` works (diffusers raises ``NotImplementedError``).
    - NumPy arrays work, with a ``numpy.random.Generator`` for the noise.
    - Bad input raises at once: unknown options at construction (diffusers notices a bad
      ``prediction_type`` only at the first step), ``set_timesteps(0)``, betas outside (0, 1),
      ``step`` before ``set_timesteps`` or after the last timestep, a timestep not in the
      schedule (``TimestepNotInScheduleError``, also an ``IndexError``), shape mismatches and
      generators of the wrong kind. A failed call leaves the scheduler unchanged.
    - ``num_inference_steps > num_train_timesteps`` is an error for ``leading`` and
      ``trailing`` spacing, which cannot give distinct steps there.
    - The constructor does not build a 1000-step schedule (diffusers does, in Python loops);
      ``timesteps``/``sigmas`` read before ``set_timesteps`` build it on first access.
    - ``init_noise_sigma`` is a Python float, not a 0-d tensor.
    - ``step`` reads only host-side tables: no ``.item()``, no ``nonzero()``, no device sync.
      The start index needs none either when the loop iterates over ``timesteps`` (the
      pipeline loop) or after ``set_begin_index``; any other first timestep is looked up by
      value, which reads it once.
    - ``eta``, ``s_noise`` and ``discard_penultimate_sigma`` are extra config keys; their
      defaults give diffusers' numbers. diffusers ignores them (with a logged warning) when
      it loads a config saved by kdpm2.
    - Config values are type-checked: a string ``"false"`` for a boolean key raises
      ``TypeError`` instead of counting as true (``test_config.py``, load errors).
    - ``from_config`` names the keys it ignores in one warning, also those of other
      schedulers (diffusers drops those silently) (``test_config.py``, from_config tests).

    **In diffusers pipelines.** ``pipe.scheduler = KDPM2AncestralDiscreteScheduler.from_config(
    pipe.scheduler.config)`` gives the same images as diffusers' own scheduler, and
    ``pipe.save_pretrained`` / ``DiffusionPipeline.from_pretrained`` keep it, provided kdpm2
    is imported before loading (``model_index.json`` names the module ``"kdpm2"``;
    ``tests/test_pipelines.py``). ``import kdpm2`` never imports diffusers, so while diffusers
    is imported the constructor returns an instance of a subclass that also derives from
    diffusers' ``SchedulerMixin``, which is what ``save_pretrained`` checks (see
    :class:`kdpm2.SchedulerMixin`). It is still an instance of this class, with the same
    behaviour, but ``type(s)`` is that subclass; a scheduler created before diffusers was
    imported keeps this class and is dropped by ``save_pretrained`` (recreate it with
    ``from_config(s.config)``). To use another scheduler with a pipeline saved with this one,
    load the pipeline and then swap ``pipe.scheduler``: passing ``scheduler=`` to
    ``from_pretrained`` fails diffusers' check against ``kdpm2.SchedulerMixin``.

    Examples
    --------
    >>> import numpy as np
    >>> sch = KDPM2AncestralDiscreteScheduler()
    >>> sch.set_timesteps(4)
    >>> rng = np.random.default_rng(0)
    >>> x = sch.init_noise_sigma * rng.standard_normal((1, 2), dtype=np.float32)
    >>> for t in sch.timesteps:
    ...     eps = sch.scale_model_input(x, t) * 0.0  # a model that always predicts zero noise
    ...     x = sch.step(eps, t, x, generator=rng).prev_sample
    >>> x.dtype, len(sch.timesteps)
    (dtype('float32'), 7)
    """

    _compatibles: ClassVar[list[str]] = list(_COMPATIBLES)
    order = 2

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "linear",
        trained_betas: Sequence[float] | np.ndarray | None = None,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        eta: float = 1.0,
        s_noise: float = 1.0,
        discard_penultimate_sigma: bool = False,
    ) -> None:
        args = dict(locals())
        args.pop("self")
        if isinstance(trained_betas, np.ndarray):
            args["trained_betas"] = trained_betas.tolist()
        _validate(args)
        self._register_config(args)
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._stored_sample: Any = None
        self._tables: dict[tuple[int, int], _CallTable] = {}
        self._table: _CallTable | None = None
        self._coefs: list[tuple[float, float, float, float]] = []
        self._native: list[tuple[Any, ...]] = []
        self._native_key: Any = None
        self._ptype: str = self.config["prediction_type"]  # read on every step
        self._checked: Any = None
        self._torch_in = False
        self._same_dtype = True
        self._out_device: Any = None
        self._cache: dict[Any, Any] = {}
        self.num_inference_steps: int | None = None

    # ----------------------------------------------------------------- schedule and state
    def _train_schedule(self) -> TrainSchedule:
        cfg = self.config
        betas = cfg["trained_betas"]
        return _cached_train_schedule(
            cfg["num_train_timesteps"],
            cfg["beta_start"],
            cfg["beta_end"],
            cfg["beta_schedule"],
            None if betas is None else tuple(betas),
        )

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: Any = None,
        num_train_timesteps: int | None = None,
    ) -> None:
        """Build the schedule for ``num_inference_steps`` steps (``2 * N - 1`` model calls).

        Matches diffusers 0.42.1 ``set_timesteps`` (see the class notes for differences).

        Parameters
        ----------
        num_inference_steps : int
            ``N >= 1``.
        device : str or torch.device, optional
            Where ``timesteps`` should live. When given, or when torch has been imported,
            ``timesteps`` and ``sigmas`` are torch tensors; otherwise NumPy arrays.
        num_train_timesteps : int, optional
            Overrides the config's value for the timestep spacing.

        Raises
        ------
        ValueError
            ``num_inference_steps`` is not an integer >= 1, or exceeds ``num_train_timesteps``
            with ``leading``/``trailing`` spacing.
        """
        n = num_inference_steps
        if not _is_int(n) or n < 1:
            raise ValueError(
                f"num_inference_steps={n!r} is invalid; expected an integer >= 1 "
                "(the number of denoising steps)."
            )
        t_train = num_train_timesteps or self.config["num_train_timesteps"]
        if not _is_int(t_train) or t_train < 1:
            raise ValueError(
                f"num_train_timesteps={num_train_timesteps!r} is invalid; expected an integer >= 1."
            )
        spacing = self.config["timestep_spacing"]
        n_built = n + 1 if self.config["discard_penultimate_sigma"] else n
        if spacing != "linspace" and n_built > t_train:
            raise ValueError(
                f"num_inference_steps={n} needs {n_built} distinct timesteps but "
                f"timestep_spacing={spacing!r} gives at most num_train_timesteps={t_train}; "
                "use fewer steps or timestep_spacing='linspace'."
            )
        self._install(self._table_for(int(n), int(t_train)), device)
        self.timesteps  # noqa: B018 - build the output tensor now, not inside the sampling loop

    def _table_for(self, n: int, t_train: int) -> _CallTable:
        """Return the call table for ``n`` steps, built once per step count.

        The tables of the 8 most recently used step counts are kept; the dict is in order of
        use (a hit is reinserted last, the first entry is dropped).
        """
        table = self._tables.pop((n, t_train), None)
        if table is None:
            schedule = make_schedule(self.config, n, t_train, self._train_schedule())
            table = _CallTable(schedule, float(self.config["s_noise"]))
            if len(self._tables) >= 8:
                del self._tables[next(iter(self._tables))]
        self._tables[(n, t_train)] = table
        return table

    def _install(self, table: _CallTable, device: Any) -> None:
        """Switch to ``table``'s schedule and reset the loop state (after it is built)."""
        self._table = table
        self._coefs = table.coefs
        # keep the inputs' checked types, and read this table in their form
        self._native = [] if self._native_key is None else table.native(self._native_key)
        self._out_device = device
        self._cache = {}
        self._step_index = None
        self._begin_index = None
        self._stored_sample = None
        self.num_inference_steps = table.schedule.num_inference_steps

    @property
    def schedule(self) -> Schedule:
        """The pure float64 tables behind the current schedule (see :class:`kdpm2.Schedule`)."""
        if self._table is None:
            t = self.config["num_train_timesteps"]
            self._install(self._table_for(t, t), None)
        assert self._table is not None
        return self._table.schedule

    def _as_output(self, name: str, values: np.ndarray, dtype: str) -> Any:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        torch = _xp.torch_module()
        if self._out_device is not None or torch is not None:
            if torch is None:
                import torch  # a device was asked for: the caller uses torch
            out = torch.from_numpy(values.astype(dtype))
            if self._out_device is not None and name == "timesteps":
                out = out.to(self._out_device)
        else:
            out = values.astype(dtype)
        self._cache[name] = out
        return out

    @property
    def timesteps(self) -> Any:
        """Training-time timestep of each model call, shape ``(2N - 1,)``.

        A torch tensor (on the ``device`` given to :meth:`set_timesteps`) when torch is in
        use, else a NumPy array; float32, or float64 for respaced sigmas, as in diffusers.
        """
        sch = self.schedule
        return self._as_output("timesteps", sch.timesteps, sch.timesteps_dtype)

    @property
    def sigmas(self) -> Any:
        """Noise levels laid out as diffusers does, shape ``(2N + 2,)``, float32, on the CPU."""
        sch = self.schedule
        return self._as_output("sigmas", sch.expanded(sch.sigmas), "float32")

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the initial noise: scale unit Gaussian noise by it."""
        return self.schedule.init_noise_sigma

    @property
    def betas(self) -> Any:
        """Training betas, shape ``(T,)``."""
        return self._as_output("betas", self._train_schedule().betas, "float32")

    @property
    def alphas_cumprod(self) -> Any:
        """Cumulative products of ``1 - betas``, shape ``(T,)``."""
        return self._as_output("alphas_cumprod", self._train_schedule().alphas_cumprod, "float32")

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
        if not _is_int(begin_index) or not 0 <= begin_index < n:
            raise ValueError(
                f"begin_index={begin_index!r} is invalid; expected an integer in [0, {n - 1}] "
                f"(an index of scheduler.timesteps)."
            )
        self._begin_index = int(begin_index)

    @property
    def state_in_first_order(self) -> bool:
        """Whether the next call is the first (Euler) half of a step; the phase of the loop."""
        return self._step_index is None or self._step_index % 2 == 0

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
        table = (
            self.schedule.timesteps
            if schedule_timesteps is None
            else np.asarray(
                schedule_timesteps.detach().cpu()
                if _xp.is_torch(schedule_timesteps)
                else schedule_timesteps,
                dtype=np.float64,
            )
        )
        value = _xp.to_float(timestep)
        hits = np.flatnonzero(table == value)
        if len(hits) == 0:
            raise TimestepNotInScheduleError(
                f"timestep {value!r} is not in scheduler.timesteps ({len(table)} values, "
                f"{float(table[0])!r} ... {float(table[-1])!r}). Pass a value from "
                "scheduler.timesteps, or call "
                "set_begin_index() to start mid-schedule."
            )
        even = hits[hits % 2 == 0]
        return int(even[0] if len(even) else hits[0])

    def _start_index(self, timestep: Any) -> int:
        """Index of a loop's first call: the first even match of ``timestep``'s value.

        The usual start is ``timesteps[0]``, index 0. When ``timestep`` is that element of
        this scheduler's own ``timesteps`` tensor (what iterating over it yields: a view), it
        is recognised from the view's storage offset, with no read of its value, so a loop on
        an accelerator needs no host-device sync even at its start.
        """
        ts = self._cache.get("timesteps")
        if (
            ts is not None
            and getattr(timestep, "_base", None) is ts
            and timestep.storage_offset() == ts.storage_offset()
            and timestep.ndim == 0
        ):
            return 0
        assert self._table is not None  # set with the schedule
        value = _xp.to_float(timestep)
        return 0 if value == self._table.first_timestep else self.index_for_timestep(value)

    def _current_index(self, timestep: Any, method: str) -> int:
        if self._table is None:
            raise RuntimeError(
                f"{method}() was called before set_timesteps(); call "
                "scheduler.set_timesteps(num_inference_steps) first."
            )
        k = self._step_index
        if k is None:
            k = self._begin_index
        if k is None:
            k = self._start_index(timestep)
        if k >= len(self._coefs):
            n = len(self._coefs)
            raise IndexError(
                f"{method}() was called after the last timestep (all {n} calls of the "
                f"{self.num_inference_steps}-step schedule are done); call set_timesteps() to "
                "start a new loop."
            )
        return k

    # ----------------------------------------------------------------------- the loop
    def scale_model_input(self, sample: Any, timestep: Any) -> Any:
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
        k = self._step_index
        if k is None or k >= len(self._coefs):  # start of a loop, or an error to report
            k = self._step_index = self._current_index(timestep, "scale_model_input")
        key = (type(sample), getattr(sample, "dtype", None))
        if key != self._native_key:
            self._use_native(key)
            self._checked = None  # step() re-checks its inputs against the new table
        return sample / self._native[k][0]

    def _use_native(self, key: tuple[type, Any]) -> None:
        """Read the per-call numbers in the form for arrays of ``key = (type, dtype)``."""
        assert self._table is not None  # callers have checked that set_timesteps ran
        self._native, self._native_key = self._table.native(key), key

    def step(
        self,
        model_output: Any,
        timestep: Any,
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
        RuntimeError
            Called before :meth:`set_timesteps`.
        IndexError
            Called after the last timestep.
        TimestepNotInScheduleError
            The first call's ``timestep`` is not in the schedule.
        ValueError, TypeError
            Mismatched shapes or types, a non-float sample, a wrong generator.
        """
        k = self._step_index
        if k is None or k >= len(self._coefs):  # start of a loop, or an error to report
            k = self._current_index(timestep, "step")
        checked = (
            type(sample),
            getattr(sample, "dtype", None),
            type(model_output),
            getattr(model_output, "dtype", None),
            type(generator),
        )
        if checked != self._checked:
            self._check_arrays(model_output, sample, generator, checked)
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output has shape {tuple(model_output.shape)} but sample has shape "
                f"{tuple(sample.shape)}; they must be equal."
            )
        # dt and up are backend-native scalars (see _CallTable.native); sigma is a float
        _, sigma, dt, up = self._native[k]
        first_half = k % 2 == 0
        start = sample if first_half else self._stored_sample
        if start is None:
            raise RuntimeError(
                f"step() at index {k} is the second half of a DPM2 step but the first half "
                "was not taken by this scheduler; start loops at an even index "
                "(set_begin_index(2 * k))."
            )
        # the update start + dt * slope: the slope (x - x0) / sigma is the predicted noise
        # itself for epsilon models (one fused op in torch); otherwise it is computed as
        # diffusers computes it. NumPy works in place on arrays made here: the same numbers
        # with half the allocations (large temporaries churn the C heap)
        x0 = None
        if self._ptype == "epsilon":
            if self._torch_in:
                prev = start.add(model_output, alpha=dt)
            elif self._same_dtype:
                prev = dt * model_output
                prev += start
            else:  # in place would keep the model output's dtype, not the promoted one
                prev = start + dt * model_output
        else:
            x0 = _math.predict_x0(model_output, sample, sigma, self._ptype)
            prev = start + _math.to_d(sample, sigma, x0) * dt
        if not first_half:  # fresh noise (drawn even when up == 0: the generator advances)
            fresh = noise.draw(model_output, generator)
            if self._torch_in:
                prev.add_(fresh, alpha=up)
            else:
                fresh *= up
                prev += fresh
        self._stored_sample = sample if first_half else None
        self._step_index = k + 1
        if x0 is None:
            if not return_dict:
                return prev, _math.predict_x0(model_output, sample, sigma, self._ptype)
            return KDPM2AncestralDiscreteSchedulerOutput(
                prev, None, (model_output, sample, sigma, self._ptype)
            )
        if not return_dict:
            return prev, x0
        return KDPM2AncestralDiscreteSchedulerOutput(prev, x0)

    def _check_arrays(self, model_output: Any, sample: Any, generator: Any, key: Any) -> None:
        """Check the inputs' types, dtype and generator, and remember ``key`` if they pass.

        ``step`` calls this only when ``key`` (the types, the dtypes and the generator's type)
        differs from the last one checked: the checks cost as much as a small tensor op. A
        list of generators is checked on every call (its length and contents can change).
        NumPy arithmetic mixing a model output of another dtype reads the numbers as Python
        floats: a scalar of the sample's dtype would round them differently there.
        """
        self._check_types(model_output, sample, generator)
        torch_in = _xp.is_torch(sample)
        same_dtype = key[1] == key[3]
        native_key = key[:2] if torch_in or same_dtype else (key[0], _FLOATS)
        if native_key != self._native_key:
            self._use_native(native_key)
        self._torch_in, self._same_dtype = torch_in, same_dtype
        self._checked = None if isinstance(generator, list | tuple) else key

    @staticmethod
    def _check_types(model_output: Any, sample: Any, generator: Any) -> None:
        torch_in = _xp.is_torch(sample)
        if torch_in:
            ok = _xp.is_torch(model_output)
        else:
            ok = isinstance(sample, np.ndarray) and isinstance(model_output, np.ndarray)
        if not ok:
            raise TypeError(
                f"model_output is a {type(model_output).__name__} and sample is a "
                f"{type(sample).__name__}; both must be torch tensors or both NumPy arrays."
            )
        floating = sample.is_floating_point() if torch_in else sample.dtype.kind == "f"  # type: ignore[union-attr]
        if not floating:
            raise TypeError(
                f"sample has dtype {sample.dtype}, not a floating-point type; convert it, e.g. "
                "sample.float() or sample.astype(np.float32)."
            )
        if generator is not None:
            noise.check_generator(generator, sample)

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
        sch = self.schedule
        if self._begin_index is None:
            ts = timesteps.detach().cpu().numpy() if _xp.is_torch(timesteps) else timesteps
            idx = [self.index_for_timestep(float(t)) for t in np.atleast_1d(np.asarray(ts))]
        else:
            k = self._step_index if self._step_index is not None else self._begin_index
            n = int(np.prod(getattr(timesteps, "shape", ()) or (1,)))
            idx = [k] * n
        table = sch.expanded(sch.sigmas).astype(np.float32)
        sigma = table[idx]
        if _xp.is_torch(original_samples):
            import torch

            sig = torch.from_numpy(sigma).to(original_samples.device, original_samples.dtype)
        else:
            sig = sigma.astype(original_samples.dtype)
        sig = sig.reshape(tuple(sig.shape) + (1,) * (original_samples.ndim - 1))
        return original_samples + noise * sig

    def __len__(self) -> int:
        return self.config["num_train_timesteps"]

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"


#: The dtype slot of a call-table key that asks for plain Python floats. Not None: NumPy
#: reads None as float64, so ``np.dtype("float64") == None`` is true.
_FLOATS = object()


class _CallTable:
    """The per-model-call numbers of one schedule, in the forms ``step`` reads them.

    ``coefs[k]`` is, for model call ``k``: ``(input scale, sigma of the model input, step
    size of the update, std of the noise added after it)``, all Python floats. A first half
    (even ``k``) goes from the step's ``sigma`` to its log midpoint and adds no noise; a
    second half goes from the step's ``sigma`` to ``sigma_down``. A scheduler keeps the
    tables of its 8 most recently used step counts, so that a pipeline calling
    ``set_timesteps(n)`` before every image rebuilds nothing. Everything here is read-only
    once built.
    """

    __slots__ = ("_native", "coefs", "first_timestep", "schedule")

    def __init__(self, schedule: Schedule, s_noise: float) -> None:
        sig, mid = schedule.sigmas.tolist(), schedule.sigmas_interpol.tolist()
        up, down = schedule.sigmas_up.tolist(), schedule.sigmas_down.tolist()
        # diffusers' scale_model_input divides by (sigma**2 + 1) ** 0.5 of a float32 sigma, in
        # float32 (torch's float32 sqrt may differ from this correctly rounded one by 1 ulp)
        c32 = schedule.call_sigmas.astype(np.float32)
        scales = np.sqrt(c32 * c32 + np.float32(1)).tolist()
        coefs = []
        for k, scale in enumerate(scales):
            i = k // 2
            if k % 2 == 0:
                coefs.append((scale, sig[i], mid[i] - sig[i], 0.0))
            else:
                coefs.append((scale, mid[i], down[i] - sig[i], up[i] * s_noise))
        self.schedule = schedule
        self.coefs = coefs
        self.first_timestep = float(schedule.timesteps[:1].astype(schedule.timesteps_dtype)[0])
        self._native: dict[Any, list[tuple[Any, ...]]] = {}

    def native(self, key: tuple[type, Any]) -> list[tuple[Any, ...]]:
        """Return ``coefs`` in the form cheapest for arrays of ``key = (type, dtype)`` (cached).

        The numbers are the same either way. A Python float makes torch wrap it in a new
        tensor on every division, which costs more than the division itself on small latents.
        The input scales are float32 values, so a 0-d float32 CPU tensor holds each exactly,
        and torch reads it as it reads the float: no type promotion, no copy to the device,
        and float16/bfloat16 math in float32 from the same value (the tests check every float
        dtype bit for bit; a float64 tensor would cost a conversion on every use). NumPy is
        fastest with 0-d arrays of the array's own dtype, which round exactly as NumPy rounds
        a Python float for that array. ``sigma``, which feeds formulas, stays a Python float.
        """
        native = self._native.get(key)
        if native is not None:
            return native
        coefs = self.coefs
        kind, dtype = key
        torch = _xp.torch_module()
        if torch is not None and issubclass(kind, torch.Tensor):
            scales = torch.tensor([c[0] for c in coefs], dtype=torch.float32).unbind()
            native = [(a, *c[1:]) for a, c in zip(scales, coefs, strict=True)]
        elif issubclass(kind, np.ndarray) and isinstance(dtype, np.dtype) and dtype.kind == "f":
            cols = np.array(coefs).astype(dtype)
            cols.flags.writeable = False
            # read-only 0-d arrays (`[k, j, ...]` keeps an array): NumPy combines those with
            # an array faster than it does a NumPy scalar, which it converts on every use
            native = [
                (cols[k, 0, ...], c[1], cols[k, 2, ...], cols[k, 3, ...])
                for k, c in enumerate(coefs)
            ]
        else:
            native = list(coefs)
        self._native[key] = native
        return native


def _new_scheduler() -> KDPM2AncestralDiscreteScheduler:
    """Return an uninitialised scheduler of the form that fits this process (for unpickling)."""
    return KDPM2AncestralDiscreteScheduler.__new__(KDPM2AncestralDiscreteScheduler)


@functools.lru_cache(maxsize=16)
def _cached_train_schedule(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: tuple[float, ...] | None,
) -> TrainSchedule:
    """Build a training schedule once per distinct config (its tables are read-only)."""
    return make_train_schedule(
        num_train_timesteps=num_train_timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=beta_schedule,
        trained_betas=trained_betas,
    )
