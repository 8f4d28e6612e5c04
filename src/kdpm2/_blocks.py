"""Model calls in fixed blocks of rows, one math-library thread each: a row's bits are its own.

Two things outside the sampler decide the last bits of a model's output, and both must be
fixed for sample ``k`` of a run to depend on ``(seed, k)`` alone:

- *The shape of the call.* A BLAS picks its kernel by the shape of the product (one row goes
  through a matrix-vector product that rounds differently from the same row in a batch of 2
  or more), and torch's vectorised element-wise kernels round the tail of an array that is
  not a multiple of their vector width differently. So sample ``k`` is always computed at row
  ``k % BLOCK`` of a ``BLOCK``-row call (a partial block is padded with zeros).
- *The number of threads.* A multi-threaded BLAS splits a product among its threads and the
  split changes the order of the sums (OpenBLAS's Haswell kernels give other bits with 2
  threads than with 1). So every call runs on one thread of the math library, and the
  blocks of a batch run side by side on a pool of threads as large as the library's own
  thread count would have been (NumPy and torch release the GIL in their kernels).

:func:`block_runner` sets this up for the length of a sampling run and restores the library's
thread settings afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from typing import Any, Literal

import numpy as np

__all__ = ["BLOCK", "block_runner", "in_blocks"]

#: Rows per model call: sample k is always computed at row k % BLOCK of block k // BLOCK.
BLOCK = 256

Model = Callable[[Any, Any], Any]
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


def in_blocks(model: Model, x: Any, t: Any, first: int, *, mapper: Mapper = map) -> Any:
    """Evaluate ``model`` on rows ``first, first + 1, ...`` of a run, in the run's fixed blocks.

    Parameters
    ----------
    model : callable
        ``model(block, t)`` on ``(BLOCK, ...)`` arrays (NumPy or torch).
    x : array
        Rows ``first .. first + len(x) - 1`` of the run, shape ``(n, ...)``.
    t : float
        The model's timestep.
    first : int
        Index in the run of ``x[0]``: row ``k`` of the run sits at row ``k % BLOCK`` of its call.
    mapper : callable, default map
        How the blocks are evaluated (``ThreadPoolExecutor.map`` runs them side by side).

    Returns
    -------
    array
        ``model``'s outputs for the rows of ``x`` (the padding rows' outputs are dropped).

    Examples
    --------
    >>> seen = []
    >>> out = in_blocks(lambda b, t: seen.append(b.shape) or b + t, np.ones((3, 2)), 1.0, 255)
    >>> seen, out.shape, float(out[0, 0])
    ([(256, 2), (256, 2)], (3, 2), 2.0)
    """
    n = len(x)
    lo = first - first % BLOCK
    hi = -(-(first + n) // BLOCK) * BLOCK
    is_tensor = not isinstance(x, np.ndarray)
    padded = x
    if (lo, hi) != (first, first + n):
        shape = (hi - lo, *x.shape[1:])
        padded = x.new_zeros(shape) if is_tensor else np.zeros(shape, dtype=x.dtype)
        padded[first - lo : first - lo + n] = x
    blocks = [padded[i : i + BLOCK] for i in range(0, hi - lo, BLOCK)]
    outputs = list(mapper(lambda block: model(block, t), blocks))
    if len(outputs) == 1:
        out = outputs[0]
    elif is_tensor:
        import torch

        out = torch.cat(outputs)
    else:
        out = np.concatenate(outputs)
    return out[first - lo : first - lo + n]


@contextmanager
def _one_library_thread(backend: Literal["numpy", "torch"], device: str) -> Iterator[int]:
    """Run the math library on one thread; yield how many threads it would have used."""
    if backend == "torch":
        import torch

        if torch.device(device).type != "cpu":  # the GPU's own order; host threads do not count
            yield 1
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield threads
        finally:
            torch.set_num_threads(threads)
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    threads = max(
        (p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1
    )
    with threadpool_limits(limits=1):
        yield threads


@contextmanager
def block_runner(
    backend: Literal["numpy", "torch"] = "numpy", device: str = "cpu"
) -> Iterator[Callable[[Model, Any, Any, int], Any]]:
    """Set up block evaluation for a sampling run: one library thread per call, a pool of calls.

    Inside the ``with`` block the math library (NumPy's BLAS through threadpoolctl, or torch's
    intra-op threads) runs on one thread, and the blocks of a model call run side by side on a
    pool of as many threads as the library had; on leaving, the library's settings come back.

    Parameters
    ----------
    backend : {'numpy', 'torch'}, default 'numpy'
    device : str, default 'cpu'
        torch device; on an accelerator the blocks run one after the other.

    Yields
    ------
    callable
        ``run(model, x, t, first)``: :func:`in_blocks` with the pool.

    Examples
    --------
    >>> with block_runner("numpy") as run:
    ...     out = run(lambda b, t: 2 * b, np.arange(600.0).reshape(300, 2), 0.0, 0)
    >>> out.shape, float(out[299, 1])
    ((300, 2), 1198.0)
    """
    with _one_library_thread(backend, device) as threads:
        if threads <= 1:
            yield in_blocks
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="kdpm2-block") as pool:
            yield partial(in_blocks, mapper=pool.map)
