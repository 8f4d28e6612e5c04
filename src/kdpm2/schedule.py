"""Noise schedules: configuration + number of steps -> immutable float64 tables.

Everything here is pure NumPy, vectorised, and free of state, devices and torch.

Rounding policy
---------------
Parity with diffusers 0.42.1 is defined by its *numbers*. diffusers builds the betas and
``alphas_cumprod`` in float32 and casts the sigma table to float32 before it derives the
ancestral split and the midpoints, and those roundings move results by up to ~1e-5 relative
(and by ~10 % for ``sigma_down`` at two steps, where ``sqrt(sigma_next**2 - sigma_up**2)``
cancels). So the float64 tables below hold the values that diffusers' float32 path gives,
computed on purpose in float32 at the points marked ``# mirrors diffusers ...``. Where that
float32 path breaks down (a negative argument under a square root, giving NaN), the exact
float64 value is used instead; see :func:`ancestral_split_table`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple, get_args

import numpy as np

from . import _math

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "BetaSchedule",
    "FrozenTables",
    "PredictionType",
    "Schedule",
    "ScheduleConfig",
    "StepLevels",
    "TimestepSpacing",
    "TrainSchedule",
    "ancestral_split_table",
    "beta_sigmas",
    "exponential_sigmas",
    "interleave",
    "karras_sigmas",
    "make_schedule",
    "make_train_schedule",
    "sigma_to_t",
    "train_schedule_from_config",
]

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
TimestepSpacing = Literal["linspace", "leading", "trailing"]
PredictionType = Literal["epsilon", "v_prediction", "sample"]

BETA_SCHEDULES: tuple[str, ...] = get_args(BetaSchedule)
TIMESTEP_SPACINGS: tuple[str, ...] = get_args(TimestepSpacing)
PREDICTION_TYPES: tuple[str, ...] = get_args(PredictionType)

_F32 = np.float32
#: Relative float32 error of sigma_down above which the exact float64 value is used instead.
_ILL_CONDITIONED = 1e-3
_EPS32 = float(np.finfo(_F32).eps)


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    """The settings a schedule is built from, with their defaults (the one place they live).

    The scheduler's constructor takes its defaults from here; :meth:`from_mapping` reads any
    scheduler config (missing keys take these defaults, unknown keys are ignored). Values are
    not checked here: :func:`kdpm2._validate.validate_config` does that at the boundary.

    Examples
    --------
    >>> ScheduleConfig.from_mapping({"beta_schedule": "scaled_linear", "skip_prk_steps": True})
    ... # doctest: +ELLIPSIS
    ScheduleConfig(num_train_timesteps=1000, ..., beta_schedule='scaled_linear', ...)
    """

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: BetaSchedule = "linear"
    trained_betas: tuple[float, ...] | None = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    prediction_type: PredictionType = "epsilon"
    timestep_spacing: TimestepSpacing = "linspace"
    steps_offset: int = 0
    eta: float = 1.0
    s_noise: float = 1.0
    discard_penultimate_sigma: bool = False

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any] | ScheduleConfig) -> ScheduleConfig:
        """Read the keys this record knows from ``config``; the others take the defaults."""
        if isinstance(config, ScheduleConfig):
            return config
        values = {name: config[name] for name in cls.__dataclass_fields__ if name in config}
        betas = values.get("trained_betas")
        if betas is not None:
            values["trained_betas"] = tuple(np.asarray(betas, dtype=np.float64).tolist())
        return cls(**values)


#: The defaults, for signatures that spell them out.
DEFAULTS = ScheduleConfig()


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.flags.writeable = False
    return a


class FrozenTables:
    """Mixin for the table records: arrays stay read-only through copies and pickles."""

    __slots__ = ()

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuild through __init__ so that __post_init__ marks the copied arrays read-only
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TrainSchedule(FrozenTables):
    """The training-time noise schedule (one entry per training timestep).

    Attributes
    ----------
    betas, alphas_cumprod : numpy.ndarray
        Shape ``(T,)``, float64 holding float32-rounded values (diffusers builds them in float32).
    sigmas : numpy.ndarray
        ``sqrt((1 - alphas_cumprod) / alphas_cumprod)``, shape ``(T,)``, increasing with ``t``.
    log_sigmas : numpy.ndarray
        ``log(sigmas)`` rounded to float32, shape ``(T,)``.
    """

    betas: np.ndarray
    alphas_cumprod: np.ndarray
    sigmas: np.ndarray
    log_sigmas: np.ndarray


class StepLevels(NamedTuple):
    """One step's levels as Python floats: what the scheduler's two calls of step ``i`` read.

    Python floats reach the arithmetic with no host read of an array per call, so a compiled
    loop keeps them as constants (a NumPy scalar read becomes a data-dependent ``item()`` that
    breaks the graph).
    """

    sigma: float
    sigma_mid: float
    sigma_down: float
    sigma_up: float
    scale_start: float  # what scale_model_input divides by at the step's start
    scale_mid: float  # ... and at its midpoint


@dataclass(frozen=True, slots=True)
class Schedule(FrozenTables):
    """The tables one sampling run reads, for ``N = num_inference_steps`` steps.

    Step ``i`` (``0 <= i < N``) starts at ``sigmas[i]``, evaluates the model again at the log
    midpoint ``sigmas_mid[i]`` and lands at ``sigmas_down[i]`` before ``sigmas_up[i]`` of
    fresh noise brings it to ``sigmas[i + 1]``. The last step is a single Euler step to 0
    (``sigmas_mid[N - 1] == sigmas_down[N - 1] == 0``). All arrays are read-only float64;
    sigmas follow the variance-exploding convention (``x_t = x_0 + sigma * noise``).

    Attributes
    ----------
    num_inference_steps : int
        ``N``.
    timesteps : numpy.ndarray
        Shape ``(2N - 1,)``: the training-time timestep of each model call, ``[t_0, m_0, t_1,
        m_1, t_2, ..., m_{N-2}, t_{N-1}]`` where ``m_i`` belongs to the midpoint of step ``i``.
    timesteps_dtype : str
        ``"float32"`` or ``"float64"``: the dtype diffusers gives its timesteps for this config.
    sigmas : numpy.ndarray
        Shape ``(N + 1,)``, the noise level at the start of each step, then ``0``.
    sigmas_mid, sigmas_up, sigmas_down : numpy.ndarray
        Shape ``(N,)``, per step (diffusers calls the midpoints ``sigmas_interpol``).
    input_scales : numpy.ndarray
        Shape ``(N, 2)``: what ``scale_model_input`` divides by at the start of step ``i``
        (``[i, 0]``) and at its midpoint (``[i, 1]``), ``sqrt(sigma**2 + 1)`` rounded as
        diffusers rounds it (float32).
    init_noise_sigma : float
        Standard deviation of the initial noise.
    """

    num_inference_steps: int
    timesteps: np.ndarray
    timesteps_dtype: str
    sigmas: np.ndarray
    sigmas_mid: np.ndarray
    sigmas_up: np.ndarray
    sigmas_down: np.ndarray
    input_scales: np.ndarray
    init_noise_sigma: float

    @property
    def call_sigmas(self) -> np.ndarray:
        """The noise level of the sample at each model call, shape ``(2N - 1,)``.

        ``sigmas[i]`` at call ``2i`` (a step's start), ``sigmas_mid[i]`` at call ``2i + 1``.
        """
        return interleave(self.sigmas[:-1], self.sigmas_mid[:-1])

    def steps(self) -> list[StepLevels]:
        """Return the per-step tables row by row, as Python floats: ``steps()[i]`` is step ``i``."""
        columns = (self.sigmas[:-1], self.sigmas_mid, self.sigmas_down, self.sigmas_up)
        columns += (self.input_scales[:, 0], self.input_scales[:, 1])
        return [StepLevels(*row) for row in zip(*(c.tolist() for c in columns), strict=True)]

    def expanded(self, table: np.ndarray) -> np.ndarray:
        """Repeat a per-step table the way diffusers lays out its ``sigmas`` attribute.

        ``[a_0, a_1, a_1, a_2, a_2, ..., a_last]``: one entry per model call plus a final one, so
        that entry ``k`` belongs to call ``k``.
        """
        return np.concatenate([table[:1], np.repeat(table[1:], 2), table[-1:]])


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    # mirrors torch.linspace(..., dtype=float32) on CPU: a float32 step, each value start + step*i
    # (first half) or end - step*(steps-1-i) (second half) with one rounding (a fused multiply-add).
    start32, end32 = _F32(start), _F32(end)
    if steps == 1:
        return np.array([start32], dtype=_F32)
    step = _F32((end32 - start32) / _F32(steps - 1))
    i = np.arange(steps)
    first = np.float64(start32) + np.float64(step) * i
    second = np.float64(end32) - np.float64(step) * (steps - 1 - i)
    return np.where(i < steps // 2, first, second).astype(_F32)


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    # the "squaredcos_cap_v2" schedule (Nichol & Dhariwal 2021, eq. 17): betas from
    # alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2) ** 2, capped at max_beta; float64, then
    # float32.
    t = np.arange(num_train_timesteps + 1, dtype=np.float64) / num_train_timesteps
    alpha_bar = np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta).astype(_F32)


def make_train_schedule(
    *,
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    beta_schedule: str = "linear",
    trained_betas: Sequence[float] | np.ndarray | None = None,
) -> TrainSchedule:
    """Build the training-time schedule (betas, cumulative alphas, sigmas).

    Parameters
    ----------
    num_train_timesteps : int
        ``T``, number of training timesteps (ignored when ``trained_betas`` is given).
    beta_start, beta_end : float
        First and last beta of the ``linear`` / ``scaled_linear`` schedules.
    beta_schedule : {"linear", "scaled_linear", "squaredcos_cap_v2"}
        How betas are spaced.
    trained_betas : sequence of float, optional
        Explicit betas; overrides the three above.

    Returns
    -------
    TrainSchedule
        Read-only float64 tables of shape ``(T,)``.

    Examples
    --------
    >>> ts = make_train_schedule()
    >>> ts.sigmas.shape, round(float(ts.sigmas[-1]), 3)
    ((1000,), 25.146)
    """
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float64).astype(_F32)
    elif beta_schedule == "linear":
        betas = _torch_linspace_f32(beta_start, beta_end, num_train_timesteps)
    elif beta_schedule == "scaled_linear":
        # mirrors diffusers' __init__: linspace of the square roots in float32, squared in float32
        root = _torch_linspace_f32(beta_start**0.5, beta_end**0.5, num_train_timesteps)
        betas = root * root
    elif beta_schedule == "squaredcos_cap_v2":
        betas = _cosine_betas(num_train_timesteps)
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}")
    # mirrors diffusers' __init__: float32 alphas; torch.cumprod on CPU accumulates float32 in
    # float64 and rounds each partial product to float32
    alphas_cumprod = np.cumprod((_F32(1.0) - betas).astype(np.float64)).astype(_F32)
    # where the product underflows float32 (long or steep schedules) diffusers divides by 0 and
    # gets sigma = inf; keep the smallest normal float32 instead so every table stays finite
    alphas_cumprod = np.maximum(alphas_cumprod, np.finfo(_F32).tiny)
    sigmas = ((_F32(1.0) - alphas_cumprod) / alphas_cumprod) ** _F32(0.5)
    with np.errstate(divide="ignore"):
        log_sigmas = np.log(sigmas)
    return TrainSchedule(
        betas=_readonly(betas),
        alphas_cumprod=_readonly(alphas_cumprod),
        sigmas=_readonly(sigmas),
        log_sigmas=_readonly(log_sigmas),
    )


def train_schedule_from_config(config: Mapping[str, Any] | ScheduleConfig) -> TrainSchedule:
    """Build the training schedule of a scheduler config (missing keys take the defaults).

    Built once per distinct training configuration: the tables are read-only, so they are
    shared (a pure function of five values; pipelines build a scheduler per request).

    Examples
    --------
    >>> train_schedule_from_config({"beta_schedule": "scaled_linear"}).sigmas[-1].round(3)
    np.float64(14.615)
    """
    c = ScheduleConfig.from_mapping(config)
    return _train_schedule(
        c.num_train_timesteps, c.beta_start, c.beta_end, c.beta_schedule, c.trained_betas
    )


@functools.lru_cache(maxsize=16)
def _train_schedule(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: tuple[float, ...] | None,
) -> TrainSchedule:
    return make_train_schedule(
        num_train_timesteps=num_train_timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=beta_schedule,
        trained_betas=trained_betas,
    )


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray, *, float32: bool = False) -> np.ndarray:
    """Map noise levels to (fractional) training timesteps by interpolating in ``log(sigma)``.

    Parameters
    ----------
    sigma : numpy.ndarray
        Noise levels, any shape.
    log_sigmas : numpy.ndarray
        ``TrainSchedule.log_sigmas``, shape ``(T,)``, non-decreasing.
    float32 : bool
        Do the arithmetic in float32 (how diffusers maps its midpoint sigmas) instead of float64.

    Returns
    -------
    numpy.ndarray
        Timesteps in ``[0, T - 1]``, same shape as ``sigma``; sigmas outside the table clamp to
        its ends.

    Examples
    --------
    >>> ls = np.log(np.array([1.0, 2.0, 4.0]))
    >>> sigma_to_t(np.array([2.0, 2.0**1.5, 100.0]), ls).round(9).tolist()
    [1.0, 1.5, 2.0]
    """
    dt = _F32 if float32 else np.float64
    log_table = log_sigmas.astype(dt, copy=False)
    sigma = np.asarray(sigma, dtype=dt)
    if len(log_table) < 2:
        return np.zeros(sigma.shape)
    log_sigma = np.log(np.maximum(sigma, dt(1e-10)))
    # index of the last table entry <= log_sigma, kept where a right neighbour exists
    # (np.minimum/np.maximum: np.clip's Python wrapper costs more than the arithmetic here)
    low = np.searchsorted(log_table, log_sigma, side="right") - 1
    low = np.minimum(np.maximum(low, 0), len(log_table) - 2)
    lo, hi = log_table[low], log_table[low + 1]
    gap = lo - hi
    flat = gap == 0  # equal neighbours (a tiny beta): any weight is exact, take 0
    w = np.minimum(np.maximum((lo - log_sigma) / np.where(flat, dt(1), gap), dt(0)), dt(1))
    w = np.where(flat, dt(0), w)
    return ((dt(1) - w) * low.astype(dt) + w * (low + 1).astype(dt)).astype(np.float64)


def _spaced_timesteps(
    spacing: str, n: int, num_train_timesteps: int, steps_offset: int
) -> np.ndarray:
    # mirrors diffusers' set_timesteps: float32 timesteps, descending
    if spacing == "linspace":
        return np.linspace(0, num_train_timesteps - 1, n, dtype=_F32)[::-1].copy()
    if spacing == "leading":
        ratio = num_train_timesteps // n
        ts = (np.arange(0, n) * ratio).round()[::-1].copy().astype(_F32)
        return ts + _F32(steps_offset)
    if spacing == "trailing":
        ratio = num_train_timesteps / n
        ts = np.arange(num_train_timesteps, 0, -ratio)
        if len(ts) != n:
            # diffusers' float arange gives n + 1 values here; take the n exact ones
            ts = num_train_timesteps - ratio * np.arange(n)
        return ts.round().astype(_F32) - _F32(1)
    raise ValueError(f"unknown timestep_spacing {spacing!r}")


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Return ``n`` noise levels from ``sigma_max`` to ``sigma_min`` (Karras et al. 2022, eq. 5)."""
    ramp = np.linspace(0, 1, n)
    with np.errstate(over="ignore", invalid="ignore"):  # a tiny rho overflows: callers check
        min_inv_rho = np.float64(sigma_min) ** (1 / rho)
        max_inv_rho = np.float64(sigma_max) ** (1 / rho)
        return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
    """Return ``n`` log-uniformly spaced noise levels from ``sigma_max`` to ``sigma_min``."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))


def beta_sigmas(sigma_min: float, sigma_max: float, n: int, a: float = 0.6) -> np.ndarray:
    """Return ``n`` sigmas from ``sigma_max`` down to ``sigma_min`` at Beta(a, a) quantiles.

    Lee et al. 2024, "Beta Sampling is All You Need" (diffusers' ``use_beta_sigmas``); needs
    scipy.
    """
    try:
        from scipy.special import betaincinv
    except ImportError as e:  # pragma: no cover - exercised only without scipy
        raise ImportError(
            "use_beta_sigmas=True needs scipy for the Beta quantile function; "
            "install it with `pip install scipy`."
        ) from e
    q = 1 - np.linspace(0, 1, n)
    return sigma_min + betaincinv(a, a, q) * (sigma_max - sigma_min)


def ancestral_split_table(
    sigmas: np.ndarray, sigmas_next: np.ndarray, eta: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Split each step ``sigma -> sigma_next`` into a deterministic and a noise part (tables).

    :func:`kdpm2._math.ancestral_split` computed in float32, as diffusers computes its tables
    (this is where the split cancels badly at one or two steps), except where float32 fails:
    there (``sigma_down`` NaN, or 0 while the exact value is positive, or its float32
    rounding error above 0.1 %) the float64 form
    ``sigma_next * sqrt(1 - eta**2 * (1 - (sigma_next / sigma)**2))`` is used, which has no
    cancellation. Requires ``sigma > 0``.

    Parameters
    ----------
    sigmas, sigmas_next : numpy.ndarray
        Shape ``(N,)``, with ``sigmas > 0`` and ``0 <= sigmas_next <= sigmas``.
    eta : float
        Amount of ancestral noise, ``0 <= eta <= 1``.

    Returns
    -------
    sigma_down, sigma_up : numpy.ndarray
        Shape ``(N,)`` float64, finite, ``0 <= sigma_up <= sigma_next``.

    Examples
    --------
    >>> down, up = ancestral_split_table(np.array([2.0]), np.array([1.0]))
    >>> round(float(down[0]) ** 2 + float(up[0]) ** 2, 6)  # float32 values
    1.0
    """
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # mirrors diffusers' set_timesteps (float32 tensors); eta as in k-diffusion
        down32, up32 = _math.ancestral_split(sigmas.astype(_F32), sigmas_next.astype(_F32), eta)
    s64 = np.asarray(sigmas, dtype=np.float64)
    sn64 = np.asarray(sigmas_next, dtype=np.float64)
    ratio2 = (sn64 / s64) ** 2
    down_over_next2 = np.maximum((1.0 - eta**2) + eta**2 * ratio2, 0.0)  # (down / next)**2
    exact_positive = (sn64 > 0) & (down_over_next2 > 0)  # the exact sigma_down is > 0
    # float32 sigma_down carries a relative error of about eps32 * sigma_next**2 / sigma_down**2
    # (cancellation); past _ILL_CONDITIONED it is noise, not diffusers' number, on any machine
    # (torch's float32 sqrt is not correctly rounded, so the noise differs between CPUs).
    bad = (
        ~np.isfinite(down32)
        | ~np.isfinite(up32)
        | ((down32 <= 0) & exact_positive)
        | ((sn64 > 0) & (down_over_next2 * _ILL_CONDITIONED < _EPS32))
    )
    if not bad.any():  # the usual case: diffusers' float32 numbers stand
        return down32.astype(np.float64), up32.astype(np.float64)
    up64 = np.minimum(sn64, eta * sn64 * np.sqrt(np.maximum(1.0 - ratio2, 0.0)))
    down64 = sn64 * np.sqrt(down_over_next2)
    down = np.where(bad, down64, down32.astype(np.float64))
    up = np.where(bad, up64, up32.astype(np.float64))
    return down, up


def make_schedule(
    config: Mapping[str, Any] | ScheduleConfig,
    num_inference_steps: int,
    num_train_timesteps: int | None = None,
    *,
    train: TrainSchedule | None = None,
) -> Schedule:
    """Build the sampling tables for ``num_inference_steps`` DPM2-ancestral steps.

    Parameters
    ----------
    config : Mapping or ScheduleConfig
        Scheduler configuration (the keys of ``KDPM2AncestralDiscreteScheduler``'s constructor;
        missing keys take the defaults), already validated.
    num_inference_steps : int
        ``N >= 1``.
    num_train_timesteps : int, optional
        Overrides ``config["num_train_timesteps"]`` for the timestep spacing only (as diffusers).
    train : TrainSchedule, optional
        The config's training tables, if the caller holds them already.

    Returns
    -------
    Schedule
        Matches diffusers 0.42.1 ``set_timesteps`` (timesteps and sigmas to float32 rounding),
        except where diffusers gives NaN; see the module docstring.

    Examples
    --------
    >>> sch = make_schedule({"timestep_spacing": "linspace"}, 3)  # eta = 1: midpoint == next
    >>> sch.timesteps.round(2).tolist()
    [999.0, 499.5, 499.5, 0.0, 0.0]
    """
    cfg = ScheduleConfig.from_mapping(config)
    train = train_schedule_from_config(cfg) if train is None else train
    discard = cfg.discard_penultimate_sigma
    n_build = num_inference_steps + 1 if discard else num_inference_steps
    t_train = num_train_timesteps or cfg.num_train_timesteps
    timesteps: np.ndarray = _spaced_timesteps(
        cfg.timestep_spacing, n_build, t_train, cfg.steps_offset
    )
    # train.sigmas hold float32 values (diffusers interpolates its float32 sigma table)
    sigmas = np.interp(timesteps, np.arange(len(train.sigmas)), train.sigmas)
    timesteps_dtype = "float32"
    respace = {
        "karras": cfg.use_karras_sigmas,
        "exponential": cfg.use_exponential_sigmas,
        "beta": cfg.use_beta_sigmas,
    }
    kind = next((k for k, on in respace.items() if on), None)
    if kind is not None:
        lo, hi = float(sigmas[-1]), float(sigmas[0])
        build = {"karras": karras_sigmas, "exponential": exponential_sigmas, "beta": beta_sigmas}
        sigmas = build[kind](lo, hi, n_build)
        timesteps = sigma_to_t(sigmas, train.log_sigmas)
        if kind == "karras":
            timesteps = timesteps.round()
        timesteps_dtype = "float64"
    if discard:
        # A1111 / ComfyUI: drop the last non-zero sigma of the N+1-step schedule (with the
        # trailing 0 appended, the next-to-last entry), and its timestep
        timesteps = timesteps[:-1]
        sigmas = sigmas[:-1]
    # mirrors diffusers' set_timesteps: the step tables are derived from float32 sigmas
    base = np.concatenate([sigmas, [0.0]]).astype(_F32).astype(np.float64)
    down, up = ancestral_split_table(base[:-1], base[1:], float(cfg.eta))
    down[-1] = up[-1] = 0.0  # the last step is a plain Euler step to sigma = 0
    # mirrors diffusers' set_timesteps: the log midpoint in float32
    with np.errstate(divide="ignore", invalid="ignore"):
        mid = _math.log_midpoint(base[:-1].astype(_F32), down.astype(_F32)).astype(np.float64)
    mid[-1] = 0.0
    t_mid = sigma_to_t(mid[:-1], train.log_sigmas, float32=True)
    if timesteps_dtype == "float32":
        t_mid = t_mid.astype(_F32)
    ts = interleave(timesteps.astype(np.float64), t_mid.astype(np.float64))
    # mirrors diffusers' scale_model_input: (sigma**2 + 1) ** 0.5 of a float32 sigma, in float32
    levels = np.stack([base[:-1], mid], axis=1).astype(_F32)
    input_scales = np.sqrt(levels * levels + _F32(1))
    smax = _F32(base.max())
    if cfg.timestep_spacing == "leading":
        # mirrors diffusers' init_noise_sigma: (max**2 + 1) ** 0.5 on a float32 tensor
        init = float((smax**2 + _F32(1)) ** _F32(0.5))
    else:
        init = float(smax)
    return Schedule(
        num_inference_steps=len(base) - 1,
        timesteps=_readonly(ts),
        timesteps_dtype=timesteps_dtype,
        sigmas=_readonly(base),
        sigmas_mid=_readonly(mid),
        sigmas_up=_readonly(up),
        sigmas_down=_readonly(down),
        input_scales=_readonly(input_scales),
        init_noise_sigma=init,
    )


def interleave(at_steps: np.ndarray, at_midpoints: np.ndarray) -> np.ndarray:
    """Lay out per-step values in model-call order: ``[s_0, m_0, s_1, m_1, ..., s_last]``.

    ``at_steps`` has one value per step (``N``), ``at_midpoints`` one per second half
    (``N - 1``: the last step is a single call).
    """
    out = np.empty(len(at_steps) + len(at_midpoints), dtype=np.float64)
    out[0::2] = at_steps
    out[1::2] = at_midpoints
    return out
