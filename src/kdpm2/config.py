"""Configuration, validation of what users pass in, and ``scheduler_config.json`` persistence.

The defaults live in one place, the constructor signature of the configurable class; the
config is derived from it by introspection, so the two cannot drift.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from . import _xp, noise
from ._io import write_bytes_atomic
from .schedule import BETA_SCHEDULES, PREDICTION_TYPES, TIMESTEP_SPACINGS

__all__ = [
    "CONFIG_NAME",
    "ConfigMixin",
    "FrozenConfig",
    "check_step_inputs",
    "is_int",
    "register_to_config",
    "validate_config",
]

CONFIG_NAME = "scheduler_config.json"

T = TypeVar("T", bound="ConfigMixin")


class FrozenConfig(dict[str, Any]):
    """An immutable ``dict`` with attribute access (``config.beta_schedule``).

    It is a ``dict`` subclass, as diffusers' ``FrozenDict`` is, because diffusers'
    ``from_config`` treats anything that is not a ``dict`` as a path to load; so
    ``diffusers.EulerDiscreteScheduler.from_config(kdpm2_scheduler.config)`` works. Every method
    that would change it raises ``TypeError``; ``dict(config)`` or ``config.copy()`` gives a
    mutable copy.

    Examples
    --------
    >>> c = FrozenConfig({"eta": 1.0})
    >>> c.eta, c["eta"], dict(c)
    (1.0, 1.0, {'eta': 1.0})
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"config is read-only (tried to set {name!r}); build a new object with "
            "from_config(config, **changes)"
        )

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "config is read-only; copy it with dict(config), or build a new object with "
            "from_config(config, **changes)"
        )

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FrozenConfig({dict(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self) == dict(other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(_jsonable(dict(self)), sort_keys=True))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenConfig, (dict(self),))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def register_to_config(init: Callable[..., None]) -> Callable[..., None]:
    """Decorate a :class:`ConfigMixin` subclass's ``__init__`` so its arguments become ``config``.

    The config holds every constructor argument (defaults filled in from the signature), as
    diffusers' decorator of the same name does; it is registered before ``init`` runs.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: ConfigMixin, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop(next(iter(signature.parameters)))  # self
        self._internal_dict = FrozenConfig({k: _jsonable(v) for k, v in values.items()})
        init(self, *args, **kwargs)

    return wrapper


def is_int(value: object) -> bool:
    """Return whether ``value`` is an integer (a bool is not)."""
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


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Raise for any constructor argument that cannot give a valid schedule.

    Raises
    ------
    ValueError
        A value outside its range, an unknown option, or options that contradict each other.
    TypeError
        A value of the wrong type (a string ``"false"`` for a boolean, say).
    ImportError
        ``use_beta_sigmas=True`` without scipy.
    """
    _check_choice("beta_schedule", cfg["beta_schedule"], BETA_SCHEDULES)
    _check_choice("prediction_type", cfg["prediction_type"], PREDICTION_TYPES)
    _check_choice("timestep_spacing", cfg["timestep_spacing"], TIMESTEP_SPACINGS)
    t = cfg["num_train_timesteps"]
    if not is_int(t) or t < 1:
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
    if not is_int(off) or off < 0:
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


def check_step_inputs(model_output: Any, sample: Any, generator: Any) -> None:
    """Raise for ``step`` inputs of the wrong kind, dtype or shape (metadata only: no sync).

    Raises
    ------
    TypeError
        Not both NumPy arrays or both tensors, a non-float sample, a wrong kind of generator.
    ValueError
        Shapes that differ, or a list of generators whose length is not the batch size.
    """
    if isinstance(sample, np.ndarray):
        torch_in, ok = False, isinstance(model_output, np.ndarray)
    else:
        torch = _xp.torch_module()
        torch_in = torch is not None and isinstance(sample, torch.Tensor)
        ok = torch is not None and torch_in and isinstance(model_output, torch.Tensor)
    if not ok:
        raise TypeError(
            f"model_output is a {type(model_output).__name__} and sample is a "
            f"{type(sample).__name__}; both must be torch tensors or both NumPy arrays."
        )
    floating = sample.is_floating_point() if torch_in else sample.dtype.kind == "f"  # pyright: ignore[reportAttributeAccessIssue]
    if not floating:
        raise TypeError(
            f"sample has dtype {sample.dtype}, not a floating-point type; convert it, e.g. "
            "sample.float() or sample.astype(np.float32)."
        )
    if model_output.shape != sample.shape:
        raise ValueError(
            f"model_output has shape {tuple(model_output.shape)} but sample has shape "
            f"{tuple(sample.shape)}; they must be equal."
        )
    if generator is not None:
        noise.check_generator(generator, sample)


class ConfigMixin:
    """Give a class a diffusers-compatible ``config`` built from its constructor arguments.

    Subclasses decorate ``__init__`` with :func:`register_to_config`.
    """

    config_name = CONFIG_NAME
    _internal_dict: Mapping[str, Any]

    @classmethod
    def _config_keys(cls) -> dict[str, Any]:
        """Return the constructor's keyword names and defaults, in signature order."""
        params = inspect.signature(cls.__init__).parameters
        return {
            name: p.default
            for name, p in params.items()
            if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    @property
    def config(self) -> FrozenConfig:
        """The constructor arguments this object was built with (read-only mapping)."""
        cfg = self._internal_dict
        # a pipeline may swap in its own mapping type (diffusers' FrozenDict); keep it readable
        return cfg if isinstance(cfg, FrozenConfig) else FrozenConfig(cfg)

    @classmethod
    def extract_init_dict(
        cls, config: Mapping[str, Any], **overrides: Any
    ) -> tuple[dict[str, Any], list[str]]:
        """Split a config mapping into constructor arguments and the keys we do not know.

        ``_``-prefixed keys are metadata and dropped silently; keys listed in
        ``_use_default_values`` are treated as absent (diffusers writes it); ``overrides`` win.
        """
        known = cls._config_keys()
        use_default = set(config.get("_use_default_values", ()) or ())
        init: dict[str, Any] = {}
        unknown: list[str] = []
        for key, value in {**dict(config), **overrides}.items():
            if key.startswith("_"):
                continue
            if key in use_default and key not in overrides:
                continue
            if key in known:
                init[key] = value
            else:
                unknown.append(key)
        return init, unknown

    @classmethod
    def from_config(cls: type[T], config: Any = None, **overrides: Any) -> T:
        """Build an object from a config mapping (e.g. another scheduler's ``.config``).

        Parameters
        ----------
        config : Mapping or object with a ``config`` mapping, optional
            A dict, a ``FrozenConfig``, diffusers' ``FrozenDict`` or a scheduler. Keys this class
            does not know are ignored with one warning that lists them.
        **overrides
            Constructor arguments that take precedence over ``config``.

        Returns
        -------
        The new object.
        """
        if config is None:
            config = {}
        if not isinstance(config, Mapping) and isinstance(getattr(config, "config", None), Mapping):
            config = config.config
        if not isinstance(config, Mapping):
            raise TypeError(
                f"config must be a mapping (a dict or a scheduler's .config), got "
                f"{type(config).__name__}."
            )
        init, unknown = cls.extract_init_dict(config, **overrides)
        if unknown:
            warnings.warn(
                f"{cls.__name__}.from_config ignores keys it does not use: {sorted(unknown)}.",
                stacklevel=2,
            )
        return cls(**init)

    def to_json_string(self) -> str:
        """Serialise the config as diffusers does: sorted keys, indent 2, ``_class_name`` added."""
        from . import __version__

        data = {
            **_jsonable(dict(self.config)),
            "_class_name": type(self).__name__,
            "_kdpm2_version": __version__,
        }
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def save_config(self, save_directory: str | os.PathLike[str], **_: Any) -> Path:
        """Write ``scheduler_config.json`` into ``save_directory`` (created if needed), atomically.

        Returns
        -------
        pathlib.Path
            The file written.
        """
        directory = Path(save_directory)
        if directory.is_file():
            raise ValueError(
                f"save_directory {str(directory)!r} is a file; pass a directory to write "
                f"{self.config_name} into."
            )
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self.config_name
        write_bytes_atomic(path, self.to_json_string().encode("utf-8"))
        return path

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> Path:
        """Write the config, as :meth:`save_config` does (a scheduler has no weights)."""
        return self.save_config(save_directory, **kwargs)

    @classmethod
    def load_config(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        """Read a ``scheduler_config.json`` (a directory, a ``subfolder`` of one, or the file).

        Raises
        ------
        FileNotFoundError
            No such file (hub names are not supported: everything is local).
        ValueError
            The file is not a JSON object.
        """
        path = Path(pretrained_model_name_or_path)
        if subfolder:
            path = path / subfolder
        if path.is_dir():
            path = path / cls.config_name
        if not path.is_file():
            raise FileNotFoundError(
                f"no scheduler config at {str(path)!r}; pass a directory that contains "
                f"{cls.config_name} (or the file itself). Only local paths are supported."
            )
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                "fix the file or save it again with save_config()."
            ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}.")
        data["_source_path"] = str(path)
        return data

    @classmethod
    def from_pretrained(
        cls: type[T],
        pretrained_model_name_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        **overrides: Any,
    ) -> T:
        """Load from a local ``scheduler_config.json`` (see :meth:`load_config`).

        Errors in a value name the file and the key.
        """
        data = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder)
        source = data.pop("_source_path")
        init, unknown = cls.extract_init_dict(data, **overrides)
        if unknown:
            warnings.warn(
                f"{source}: {cls.__name__} ignores keys it does not use: {sorted(unknown)}.",
                stacklevel=2,
            )
        try:
            return cls(**init)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{source}: {e}") from None
