"""Configuration records and ``scheduler_config.json`` persistence, compatible with diffusers.

The defaults live in one place, the constructor signature of the configurable class; the
config is derived from it by introspection, so the two cannot drift.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ._io import write_bytes_atomic

__all__ = ["CONFIG_NAME", "ConfigMixin", "FrozenConfig", "register_to_config"]

CONFIG_NAME = "scheduler_config.json"
#: Largest config file read (1e6 trained_betas written as JSON take about 20 MB).
MAX_CONFIG_BYTES = 64 * 2**20

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
        config = {}
        for key, value in values.items():
            try:
                config[key] = _jsonable(value)
            except RecursionError:
                raise ValueError(
                    f"{key} is nested too deeply to be a config value; expected a number, a "
                    "string, or a flat sequence of numbers."
                ) from None
        self._internal_dict = FrozenConfig(config)
        init(self, *args, **kwargs)

    return wrapper


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
        listed = config.get("_use_default_values", ()) or ()
        if not (isinstance(listed, list | tuple) and all(isinstance(k, str) for k in listed)):
            raise ValueError(
                f"_use_default_values={listed!r} is invalid; expected a list of config key "
                "names (diffusers writes the keys that took their defaults)."
            )
        use_default = set(listed)
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
        from ._version import __version__

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
        try:
            if path.is_dir():
                path = path / cls.config_name
            found = path.is_file()
        except OSError as e:  # a name too long for the file system, say
            raise FileNotFoundError(
                f"no scheduler config at {str(path)[:200]!r}: {e.strerror or e}."
            ) from None
        if not found:
            raise FileNotFoundError(
                f"no scheduler config at {str(path)!r}; pass a directory that contains "
                f"{cls.config_name} (or the file itself). Only local paths are supported."
            )
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ValueError(
                f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB; a scheduler config is a "
                "few hundred bytes (or a few MB with trained_betas). Is this the right file?"
            )
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 "
                "(save_config() does)."
            ) from None
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                "fix the file or save it again with save_config()."
            ) from None
        except (ValueError, RecursionError) as e:  # a 5000-digit number, deep nesting
            raise ValueError(
                f"{path}: cannot be read as a scheduler config ({type(e).__name__}: "
                f"{str(e)[:200]}); fix the file or save it again with save_config()."
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
        try:
            init, unknown = cls.extract_init_dict(data, **overrides)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        if unknown:
            warnings.warn(
                f"{source}: {cls.__name__} ignores keys it does not use: {sorted(unknown)}.",
                stacklevel=2,
            )
        try:
            return cls(**init)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{source}: {e}") from None
