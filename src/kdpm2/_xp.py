"""Tiny array-backend shim: NumPy or torch, told apart without importing torch.

torch is looked up in ``sys.modules`` only: if the caller has never imported torch, no object
they hand us can be a tensor, so there is nothing to import (the array-api-compat idea).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeVar, Union

import numpy as np

if TYPE_CHECKING:
    import torch

    Array = np.ndarray | torch.Tensor
else:
    Array = Any

#: An array that keeps its type through a function: NumPy in, NumPy out; torch in, torch out.
A = TypeVar("A", np.ndarray, "torch.Tensor")

#: A noise level: a Python float, a 0-d array, or one value per sample (shape ``(B,)``).
SigmaLike = Union[float, Array]  # noqa: UP007 - Array is Any at run time, `|` would fail


def torch_module() -> Any | None:
    """Return the ``torch`` module if the caller has imported it, else ``None`` (never imports)."""
    mod = sys.modules.get("torch")
    # ``sys.modules["torch"] = None`` is how a process blocks torch; treat it as absent.
    return mod if mod is not None and hasattr(mod, "Tensor") else None


def is_torch(x: object) -> bool:
    """Return whether ``x`` is a ``torch.Tensor``, without importing torch."""
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def compiling() -> bool:
    """Return whether the code runs under ``torch.compile`` (Dynamo is tracing it)."""
    torch = torch_module()
    return torch is not None and torch.compiler.is_compiling()


def to_float(x: object) -> float:
    """Convert a Python/NumPy number or a one-element array/tensor to a Python float.

    For a tensor on an accelerator this reads its value back to the host (a sync); callers
    use it only outside the per-step path.
    """
    if is_torch(x):
        return float(x.reshape(()).item())  # type: ignore[union-attr]
    return float(np.asarray(x).reshape(()))


def append_dims(sigma: Any, ndim: int) -> Any:
    """Give ``sigma`` trailing singleton axes so that it broadcasts over an array of ``ndim`` axes.

    A Python float or a 0-d array is returned unchanged; an array of shape ``(B,)`` becomes
    ``(B, 1, ..., 1)``. This is the one place where per-sample noise levels are broadcast.

    Raises
    ------
    ValueError
        If ``sigma`` has more axes than the array it should broadcast over.
    """
    sdim = getattr(sigma, "ndim", 0)
    if sdim == 0:
        return sigma
    if sdim > ndim:
        raise ValueError(
            f"sigma has {sdim} axes (shape {tuple(sigma.shape)}) but the sample has only {ndim}; "
            "pass one noise level per sample, shape (B,)."
        )
    return sigma.reshape(tuple(sigma.shape) + (1,) * (ndim - sdim))


def like(value: Any, x: Any) -> Any:
    """Return ``value`` (a float or array) as an array of ``x``'s type, dtype and device.

    Python floats pass through untouched: they already take the dtype of the array they
    meet (NumPy 2 and torch both treat them as "weak").
    """
    if isinstance(value, float | int):
        return float(value)
    if is_torch(x):
        torch = torch_module()
        assert torch is not None
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(np.asarray(value))
        if x.device.type == "cuda" and value.device.type == "cpu":
            # a copy from pinned memory is queued without waiting for the device (a GPU
            # property: no sync per step for per-sample levels)
            value = value.pin_memory().to(x.device, non_blocking=True)
        return value.to(device=x.device, dtype=x.dtype)
    if is_torch(value):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=x.dtype)


def _torch_among(*xs: Any) -> Any | None:
    """Return the torch module if any of ``xs`` is a tensor, else ``None``."""
    torch = torch_module()
    if torch is not None and any(isinstance(x, torch.Tensor) for x in xs):
        return torch
    return None


def where(cond: Any, a: Any, b: Any) -> Any:
    """Elementwise ``cond ? a : b`` for NumPy or torch."""
    torch = _torch_among(cond, a, b)
    return np.where(cond, a, b) if torch is None else torch.where(cond, a, b)


def _ns(x: Any) -> Any:
    return _torch_among(x) or np


def sqrt(x: Any) -> Any:
    """Elementwise square root (NumPy or torch)."""
    return _ns(x).sqrt(x)


def log(x: Any) -> Any:
    """Elementwise natural logarithm (NumPy or torch)."""
    return _ns(x).log(x)


def exp(x: Any) -> Any:
    """Elementwise exponential (NumPy or torch)."""
    return _ns(x).exp(x)


def minimum(a: Any, b: Any) -> Any:
    """Elementwise minimum (NumPy or torch); either side may be a Python float."""
    torch = _torch_among(a, b)
    if torch is not None:
        if not is_torch(a):
            a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
        if not is_torch(b):
            b = torch.as_tensor(b, dtype=a.dtype, device=a.device)
        return torch.minimum(a, b)
    return np.minimum(a, b)


def promote_to_compute(sample: Any, model_output: Any) -> tuple[Any, Any]:
    """Return both in the computing dtype: float32, or wider if either input is."""
    if isinstance(sample, np.ndarray):
        dtype = np.result_type(sample.dtype, model_output.dtype, np.float32)
        return sample.astype(dtype, copy=False), model_output.astype(dtype, copy=False)
    torch = torch_module()
    assert torch is not None
    dtype = torch.promote_types(
        torch.promote_types(sample.dtype, model_output.dtype), torch.float32
    )
    return sample.to(dtype), model_output.to(dtype)


def cast(x: Any, dtype: Any) -> Any:
    """Return ``x`` in ``dtype`` (no copy when it already is), NumPy or torch."""
    return x.astype(dtype, copy=False) if isinstance(x, np.ndarray) else x.to(dtype)
