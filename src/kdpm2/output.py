"""The result of a scheduler step, with the access patterns of diffusers' outputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["KDPM2AncestralDiscreteSchedulerOutput"]


@dataclass(slots=True)
class KDPM2AncestralDiscreteSchedulerOutput:
    """Result of :meth:`KDPM2AncestralDiscreteScheduler.step`.

    Read it as diffusers' outputs are read: ``out.prev_sample``, ``out[0]``,
    ``out["prev_sample"]``, ``out.to_tuple()``, ``keys()``, ``values()``, ``items()``; fields
    that are ``None`` are left out of the tuple and mapping views, as diffusers does.

    Attributes
    ----------
    prev_sample : array
        The sample for the next model call, shape ``(B, ...)``, the input's type and dtype.
    pred_original_sample : array or None
        The denoised estimate ``x0`` from this call's model output.

    Examples
    --------
    >>> out = KDPM2AncestralDiscreteSchedulerOutput(1.0, 2.0)
    >>> out[0], out["pred_original_sample"], out.to_tuple(), list(out)
    (1.0, 2.0, (1.0, 2.0), ['prev_sample', 'pred_original_sample'])
    """

    prev_sample: Any
    pred_original_sample: Any = None

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs of the fields that are not ``None``, in order."""
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        ]

    def keys(self) -> list[str]:
        """Names of the fields that are not ``None``."""
        return [name for name, _ in self.items()]

    def values(self) -> list[Any]:
        """Values of the fields that are not ``None``."""
        return [value for _, value in self.items()]

    def to_tuple(self) -> tuple[Any, ...]:
        """Return the fields that are not ``None``, in order."""
        return tuple(self.values())

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return dict(self.items())[key]
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())
