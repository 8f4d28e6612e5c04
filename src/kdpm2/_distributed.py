"""``kdpm2 sample`` as several processes: the launcher's environment, the split, the gather.

torch.distributed's launcher (``torchrun``, which ``accelerate launch`` drives) starts one
process per worker and tells each who it is through environment variables: ``WORLD_SIZE``
(how many), ``RANK`` (which one, 0-based) and ``LOCAL_RANK`` (which one on this machine, the
GPU index). With ``WORLD_SIZE`` unset or 1 the command runs as one process and this module
imports nothing. torch is imported only when a process group is made.

The split works in blocks of consecutive sample indices (the unit the CLI samples in): rank
``r`` of ``P`` takes a contiguous run of blocks, the first ``blocks % P`` ranks one block
more, so rank 0 holds the first samples and a gather in rank order is the run's order.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Launch", "PeerLostError", "ProcessGroup", "launch_from_env", "record_error", "shard"]


class PeerLostError(OSError):
    """A collective failed: another process stopped (crashed, was killed, lost its network)."""


@dataclass(frozen=True, slots=True)
class Launch:
    """Where this process stands in a multi-process run.

    Attributes
    ----------
    rank : int
        0-based index of this process among all, ``0 <= rank < world_size``.
    world_size : int
        Number of processes, at least 2.
    local_rank : int
        Index among the processes on this machine (the CUDA device it uses).
    """

    rank: int
    world_size: int
    local_rank: int

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


def _env_int(environ: Mapping[str, str], name: str, default: str | None = None) -> int:
    raw = environ.get(name, default)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            f"the launcher's environment variable {name}={raw!r} is not an integer; start the "
            "processes with torchrun (or unset WORLD_SIZE to run as one process)."
        ) from None


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """Read the launcher's environment; ``None`` means one process (no launcher, or one worker).

    Parameters
    ----------
    environ : Mapping, optional
        Default ``os.environ``.

    Returns
    -------
    Launch or None

    Raises
    ------
    ValueError
        If ``WORLD_SIZE``, ``RANK`` or ``LOCAL_RANK`` is not an integer, or ``RANK`` is out of
        range.

    Examples
    --------
    >>> launch_from_env({}) is None, launch_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    (True, True)
    >>> str(launch_from_env({"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "0"}))
    'rank 2 of 3'
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    world_size = _env_int(environ, "WORLD_SIZE")
    if world_size <= 1:
        return None
    rank = _env_int(environ, "RANK", None)
    if not 0 <= rank < world_size:
        raise ValueError(
            f"the launcher's environment variable RANK={rank} is outside [0, WORLD_SIZE="
            f"{world_size}); start the processes with torchrun."
        )
    local_rank = _env_int(environ, "LOCAL_RANK", "0")
    return Launch(rank=rank, world_size=world_size, local_rank=local_rank)


def shard(num_samples: int, rank: int, world_size: int, block: int) -> range:
    """Return the sample indices one process draws: whole blocks, in rank order.

    Parameters
    ----------
    num_samples : int
        Samples in the run, ``N``.
    rank, world_size : int
        This process and the number of processes.
    block : int
        Block size: every shard but the last non-empty one is a multiple of it.

    Returns
    -------
    range
        Consecutive indices; the shards of ranks ``0 .. world_size - 1`` concatenate to
        ``range(N)``. A rank may get none when there are fewer blocks than processes.

    Examples
    --------
    >>> [shard(1000, r, 3, 256) for r in range(3)]
    [range(0, 512), range(512, 768), range(768, 1000)]
    >>> shard(10, 1, 2, 256)
    range(10, 10)
    """
    blocks = -(-num_samples // block)
    per_rank, extra = divmod(blocks, world_size)
    first = rank * per_rank + min(rank, extra)
    count = per_rank + (rank < extra)
    return range(min(first * block, num_samples), min((first + count) * block, num_samples))


def record_error(message: str, environ: Mapping[str, str] | None = None) -> None:
    """Leave ``message`` where torchrun's failure summary reads it (``TORCHELASTIC_ERROR_FILE``).

    Without it the summary says ``error_file: <N/A>`` and points at its docs; with it, the
    summary's root cause shows this one line. Nothing happens outside torchrun.
    """
    path = (os.environ if environ is None else environ).get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            # the layout torchelastic's own error handler writes, without a traceback
            info = {"timestamp": str(int(time.time()))}
            json.dump({"message": {"message": message, "extraInfo": info}}, f)
    except OSError:
        pass  # the line on stderr is the error report; this file only improves the summary


class ProcessGroup:
    """The processes of one run: agree on failures, gather the samples on rank 0.

    gloo for samples on the CPU, NCCL for samples on CUDA (each process on
    ``cuda:LOCAL_RANK``). The rendezvous address comes from the launcher's ``MASTER_ADDR`` and
    ``MASTER_PORT``.

    Parameters
    ----------
    launch : Launch
    device : {'cpu', 'cuda'}
    timeout : float, default 300
        Seconds to wait for the other processes, at the start and in each collective.
    """

    def __init__(self, launch: Launch, device: str = "cpu", *, timeout: float = 300.0) -> None:
        import datetime

        # c10d logs each failed connection with a C++ stack (40 lines while a peer is
        # missing), burying the one line each process reports, which carries the cause; set
        # TORCH_CPP_LOG_LEVEL=INFO to see them
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
        import torch
        import torch.distributed as dist

        self.launch = launch
        self._dist = dist
        self._torch = torch
        if device == "cuda":
            self.device = torch.device("cuda", launch.local_rank)
            torch.cuda.set_device(self.device)
            backend = "nccl"
        else:
            self.device = torch.device("cpu")
            backend = "gloo"
        self.backend = backend
        self.timeout = timeout
        address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        try:
            dist.init_process_group(
                backend=backend,
                rank=launch.rank,
                world_size=launch.world_size,
                timeout=datetime.timedelta(seconds=timeout),
            )
        except (RuntimeError, ValueError) as exc:
            raise PeerLostError(
                f"could not join the other {launch.world_size - 1} process(es) at {address} "
                f"within {timeout:g} s ({backend}: {_first_line(exc)}); start all of them (with "
                "torchrun), check MASTER_ADDR and MASTER_PORT, and on several machines the "
                "network interface (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME)."
            ) from None

    def _collective(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except RuntimeError as exc:  # torch's DistBackendError and gloo's errors derive from it
            raise PeerLostError(
                f"lost contact with the other processes while {what}, or none answered within "
                f"{self.timeout:g} s ({_first_line(exc)}); another process has probably failed "
                "or stopped: see its error."
            ) from None

    def any_failed(self, failed: bool) -> bool:
        """Return whether any process reports a failure (every process must call it)."""
        flag = self._torch.tensor([int(failed)], dtype=self._torch.int32, device=self.device)
        self._collective("comparing notes", self._dist.all_reduce, flag, self._dist.ReduceOp.MAX)
        return bool(flag.item())

    def gather(self, samples: np.ndarray, sizes: list[int]) -> np.ndarray | None:
        """Concatenate every process's samples, in rank order, on rank 0.

        Parameters
        ----------
        samples : numpy.ndarray
            This process's samples, ``(sizes[rank], ...)``.
        sizes : list of int
            How many samples each rank holds (known to all: the split is deterministic).

        Returns
        -------
        numpy.ndarray or None
            On rank 0 all samples, ``(sum(sizes), ...)``; ``None`` elsewhere.
        """
        torch = self._torch
        longest = max(sizes)
        padded = np.zeros((longest, *samples.shape[1:]), dtype=samples.dtype)
        padded[: len(samples)] = samples
        tensor = torch.from_numpy(padded).to(self.device)
        rank0 = self.launch.rank == 0
        parts = [torch.empty_like(tensor) for _ in sizes] if rank0 else None
        self._collective("gathering the samples", self._dist.gather, tensor, parts, dst=0)
        if parts is None:
            return None
        pieces = [p[:n].cpu().numpy() for p, n in zip(parts, sizes, strict=True)]
        return np.concatenate(pieces, axis=0)

    def close(self) -> None:
        """Leave the process group."""
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
