"""Noise sources: torch generators, NumPy generators, and k-diffusion style noise samplers.

The scheduler draws with :func:`draw`, which reproduces diffusers' ``randn_tensor``: the
noise has the sample's shape, dtype and device; a list of generators draws one sample each
(so a batch of N gives the same noise as N runs of one); a CPU generator with a tensor on an
accelerator draws on the CPU and then moves the noise.

NumPy policy: noise comes from ``numpy.random.Generator.standard_normal`` in the sample's
dtype when that is float32 or float64, else in float32 and then cast (float16). With no
generator, a fresh unseeded ``numpy.random.default_rng()`` is used: the result is random and
not reproducible. Pass a generator to reproduce a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from . import _xp

__all__ = [
    "BrownianTreeNoiseSampler",
    "NoiseSampler",
    "check_generator",
    "draw",
    "sample_generators",
    "sample_seed",
]


class NoiseSampler(Protocol):
    """k-diffusion's noise source: ``noise_sampler(sigma, sigma_next) -> standard normal noise``.

    Called once per ancestral step with the step's two noise levels; returns an array shaped
    like the sample.
    """

    def __call__(self, sigma: Any, sigma_next: Any) -> Any:
        """Return noise shaped like the sample for the step ``sigma -> sigma_next``."""
        ...


def _kind(gen: object) -> str:
    if isinstance(gen, np.random.Generator):
        return "numpy"
    torch = _xp.torch_module()
    if torch is not None and isinstance(gen, torch.Generator):
        return "torch"
    return type(gen).__module__ + "." + type(gen).__qualname__


def check_generator(generator: Any, sample: Any, *, argument: str = "generator") -> None:
    """Raise if ``generator`` cannot draw noise for ``sample``.

    Accepts ``None``, one generator, or a list with one generator per sample, of the kind that
    matches the sample (``torch.Generator`` for tensors, ``numpy.random.Generator`` for arrays).

    Raises
    ------
    TypeError
        Wrong kind of generator (e.g. a ``torch.Generator`` with a NumPy sample).
    ValueError
        A list whose length is not the batch size.
    """
    if generator is None:
        return
    torch = _xp.torch_module()
    if isinstance(sample, np.ndarray):
        if isinstance(generator, np.random.Generator):
            return  # the common cases (one check per model call) first
    elif torch is not None and isinstance(generator, torch.Generator):
        return
    gens = list(generator) if isinstance(generator, list | tuple) else [generator]
    want = "torch" if _xp.is_torch(sample) else "numpy"
    sample_type = "torch.Tensor" if want == "torch" else "numpy.ndarray"
    want_type = "torch.Generator" if want == "torch" else "numpy.random.Generator"
    for g in gens:
        kind = _kind(g)
        if kind != want:
            got = {"numpy": "numpy.random.Generator", "torch": "torch.Generator"}.get(kind, kind)
            raise TypeError(
                f"sample is a {sample_type} but {argument} is a {got}; pass a {want_type} "
                f"for {sample_type} inputs (or a list of them, one per sample)."
            )
    if isinstance(generator, list | tuple) and len(gens) not in (1, sample.shape[0]):
        raise ValueError(
            f"{argument} is a list of {len(gens)} generators but the batch has "
            f"{sample.shape[0]} samples; pass one generator per sample or a single generator."
        )


#: dtypes that ``numpy.random.Generator.standard_normal`` draws in directly
_NATIVE = (np.dtype(np.float32), np.dtype(np.float64))


def _draw_numpy(shape: tuple[int, ...], dtype: Any, gen: np.random.Generator | None) -> Any:
    rng = gen if gen is not None else np.random.default_rng()
    native = dtype if np.dtype(dtype) in _NATIVE else np.float32
    return rng.standard_normal(shape, dtype=native).astype(dtype, copy=False)


def draw(like: Any, generator: Any = None) -> Any:
    """Draw standard normal noise shaped, typed and placed like ``like``.

    Parameters
    ----------
    like : numpy.ndarray or torch.Tensor
        Shape ``(B, ...)``; the noise takes its shape, dtype and device.
    generator : generator, list of generators, or None
        ``torch.Generator`` for tensors, ``numpy.random.Generator`` for arrays; a list draws
        one sample per generator (shape ``(1, ...)`` each) and concatenates.

    Returns
    -------
    array
        A new array (the caller may modify it), of the type, shape, dtype and device of
        ``like``.

    Examples
    --------
    >>> a = draw(np.zeros((2, 3), np.float32), np.random.default_rng(0))
    >>> b = np.random.default_rng(0).standard_normal((2, 3), dtype=np.float32)
    >>> bool((a == b).all()), a.dtype
    (True, dtype('float32'))
    """
    gens = generator
    many = isinstance(gens, (list, tuple))
    if many and len(gens) == 1:
        gens, many = gens[0], False
    if many and not gens:  # an empty batch, one generator per sample: nothing to draw
        return like * 0
    if isinstance(like, np.ndarray):
        dtype = like.dtype.type
        if many:
            one = (1, *like.shape[1:])
            return np.concatenate([_draw_numpy(one, dtype, g) for g in gens], axis=0)
        return _draw_numpy(tuple(like.shape), dtype, gens)
    torch = _xp.torch_module()
    assert torch is not None
    first: Any = gens[0] if many else gens
    if like.is_cpu and not many:  # the common case first (reading device.type costs 0.3 us)
        return torch.randn(tuple(like.shape), generator=gens, dtype=like.dtype)
    device: Any = like.device
    kind = device.type
    if kind != "cpu" and (first is None or first.device.type != "cpu"):
        if many:  # drawn where the sample lives
            one = (1, *like.shape[1:])
            parts = [torch.randn(one, generator=g, device=device, dtype=like.dtype) for g in gens]
            return torch.cat(parts, dim=0)
        return torch.randn(tuple(like.shape), generator=gens, device=device, dtype=like.dtype)
    # drawn on the host (a CPU generator serves samples anywhere, as in diffusers)
    pin = kind == "cuda"
    if many or pin:
        return _to_device(_draw_host(like, gens if many else [gens], pin), device)
    return torch.randn(tuple(like.shape), generator=gens, dtype=like.dtype).to(device)


def _draw_host(like: Any, gens: Sequence[Any], pin: bool) -> Any:
    """Draw host noise shaped like ``like`` in one buffer: whole, or a sample per generator.

    ``torch.randn`` is ``empty(...).normal_(generator)``, so filling the buffer in place gives
    its numbers with no concatenation; ``pin`` puts the buffer in pinned memory, for a copy
    that does not block (see :func:`_to_device`).
    """
    torch = _xp.torch_module()
    assert torch is not None
    noise = torch.empty(tuple(like.shape), dtype=like.dtype, pin_memory=pin)
    if len(gens) == 1:
        return noise.normal_(generator=gens[0])
    for row, g in zip(noise, gens, strict=True):
        row.unsqueeze(0).normal_(generator=g)
    return noise


def _to_device(noise: Any, device: Any) -> Any:
    """Move host noise to ``device``; from pinned memory without blocking the host.

    A GPU property: a copy from pageable memory waits for the device (a sync per ancestral
    step with a CPU generator); one from pinned memory is queued on the stream, and torch's
    host allocator keeps the buffer until the copy is done.
    """
    if device.type == "cpu":
        return noise
    return noise.to(device, non_blocking=noise.is_pinned())


def sample_seed(seed: int, index: int) -> int:
    """Return the 64-bit seed of sample ``index`` in a run seeded with ``seed``.

    The rule: NumPy's :class:`~numpy.random.SeedSequence` of the four 32-bit words ``(seed
    mod 2**32, seed // 2**32, index mod 2**32, index // 2**32)`` (a ``uint32`` array), first
    64-bit word of its ``generate_state``. Fixed-width words keep different pairs apart
    (``SeedSequence`` splits each Python or ``uint64`` integer into as few 32-bit words as it
    needs, so ``[2**32 + 5, 7]`` and ``[5, 7 * 2**32 + 1]`` would collide), and
    ``SeedSequence``'s output is part of NumPy's stable random API. A sample's noise then
    depends on ``(seed, index)`` only, not on how many samples are drawn, in which batches, or
    by how many processes: seed one generator per sample with it.

    Parameters
    ----------
    seed : int
        Seed of the whole run, ``0 <= seed < 2**64``.
    index : int
        Position of the sample in the run, ``0 <= index < 2**64``.

    Returns
    -------
    int
        In ``[0, 2**64)``: what ``torch.Generator.manual_seed`` and
        ``numpy.random.default_rng`` take.

    Raises
    ------
    ValueError
        If ``seed`` or ``index`` is outside ``[0, 2**64)``.
    TypeError
        If either is not an integer.

    Examples
    --------
    >>> sample_seed(0, 0) == sample_seed(0, 0) != sample_seed(0, 1)
    True
    >>> rng = np.random.default_rng(sample_seed(0, 7))  # sample 7's noise, whatever the batch
    """
    _check_word("seed", seed)
    _check_word("index", index)
    return _sample_seed(int(seed), int(index))


def _check_word(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}={value!r} is a {type(value).__name__}; expected an int.")
    if not 0 <= int(value) < 2**64:
        raise ValueError(f"{name}={value} is outside [0, 2**64); pass a 64-bit unsigned int.")


def _sample_seed(seed: int, index: int) -> int:
    mask = 0xFFFFFFFF
    words = np.array([seed & mask, seed >> 32, index & mask, index >> 32], dtype=np.uint32)
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


def sample_generators(seed: int, indices: Sequence[int], backend: str = "numpy") -> list[Any]:
    """Return one generator per sample, each seeded with :func:`sample_seed`.

    Parameters
    ----------
    seed : int
        Seed of the whole run.
    indices : sequence of int
        Positions of the samples in the run, e.g. ``range(start, stop)``.
    backend : {'numpy', 'torch'}, default 'numpy'
        ``numpy.random.default_rng(s)`` or CPU ``torch.Generator().manual_seed(s)`` per sample
        (CPU generators also serve CUDA samples: the noise is drawn on the CPU and moved, as
        in diffusers).

    Returns
    -------
    list
        Generators in the order of ``indices``: pass the list as ``generator=`` to
        :func:`draw` or to the scheduler's ``step`` for a batch of those samples.

    Examples
    --------
    >>> a = sample_generators(3, range(4))
    >>> b = sample_generators(3, [2])
    >>> bool((draw(np.zeros((4, 5)), a)[2] == draw(np.zeros((1, 5)), b)[0]).all())
    True
    """
    _check_word("seed", seed)
    indices = list(indices)
    for k in indices:
        _check_word("index", k)
    seeds = [_sample_seed(int(seed), int(k)) for k in indices]
    if backend == "torch":
        import torch

        return [torch.Generator().manual_seed(s) for s in seeds]
    if backend != "numpy":
        raise ValueError(f"backend={backend!r} is not supported; expected 'numpy' or 'torch'.")
    return [np.random.default_rng(s) for s in seeds]


class BrownianTreeNoiseSampler:
    """Noise from a Brownian tree: the same seed gives the same noise whatever the step order.

    A noise sampler for :func:`kdpm2.sample_dpm_2_ancestral` built on ``torchsde`` (an optional
    dependency): ``sampler(sigma, sigma_next)`` returns the normalised Brownian increment
    ``(W(sigma_next) - W(sigma)) / sqrt(|sigma - sigma_next|)``. With a list of seeds, one per
    sample, each sample has its own tree, so a sample's noise does not depend on the batch it
    is in.

    Parameters
    ----------
    x : torch.Tensor
        A sample shaped like the ones to be noised, shape ``(B, ...)``.
    sigma_min, sigma_max : float
        The range of noise levels that will be queried.
    seed : int or list of int, optional
        One seed for the batch, or one per sample.
    transform : callable, optional
        Maps a noise level to the tree's time variable (identity by default).

    Raises
    ------
    ImportError
        If torchsde is not installed.
    """

    def __init__(
        self,
        x: Any,
        sigma_min: float,
        sigma_max: float,
        seed: int | Sequence[int] | None = None,
        transform: Any = None,
    ) -> None:
        try:
            import torchsde
        except ImportError as e:
            raise ImportError(
                "BrownianTreeNoiseSampler needs torchsde; install it with "
                "`pip install kdpm2[brownian]` or `pip install torchsde`."
            ) from e
        import torch

        self._transform = transform if transform is not None else (lambda s: s)
        t0 = float(self._transform(min(sigma_min, sigma_max)))
        t1 = float(self._transform(max(sigma_min, sigma_max)))
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, []).item())
        self._batched = not isinstance(seed, int)
        seeds = [seed] if isinstance(seed, int) else [int(s) for s in seed]
        if self._batched and len(seeds) != x.shape[0]:
            raise ValueError(
                f"seed is a list of {len(seeds)} seeds but x has {x.shape[0]} samples; "
                "pass one seed per sample or a single int."
            )
        w0 = torch.zeros_like(x[:1] if self._batched else x)
        self._trees: list[Any] = [
            torchsde.BrownianTree(torch.tensor(t0), w0, torch.tensor(t1), entropy=s) for s in seeds
        ]

    def __call__(self, sigma: Any, sigma_next: Any) -> Any:
        """Return the normalised increment between two noise levels."""
        import torch

        t0 = torch.as_tensor(self._transform(torch.as_tensor(sigma)))
        t1 = torch.as_tensor(self._transform(torch.as_tensor(sigma_next)))
        forward = float(t1) >= float(t0)
        lo, hi = (t0, t1) if forward else (t1, t0)
        if self._batched:
            w: Any = torch.cat([tree(lo, hi) for tree in self._trees])
        else:
            w = self._trees[0](lo, hi)
        w = w if forward else -w
        return w / (hi - lo).abs().sqrt()
