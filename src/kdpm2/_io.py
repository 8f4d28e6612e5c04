"""Atomic file writes: config files, CLI outputs and the bundled weights."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["write_bytes_atomic"]


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees a partial file.

    The bytes go to a temporary file in the same directory (created with the usual permissions,
    i.e. subject to the umask), are flushed to disk, and then renamed over ``path`` with
    :func:`os.replace`, which is atomic on POSIX and Windows.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its directory must exist.
    data : bytes
        Complete file contents.

    Raises
    ------
    OSError
        If the directory is missing or not writable; no temporary file is left behind.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "hello.txt"
    >>> write_bytes_atomic(target, b"hi")
    >>> target.read_bytes(), [p.name for p in target.parent.iterdir()]
    (b'hi', ['hello.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
