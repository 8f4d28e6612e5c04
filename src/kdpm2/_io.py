"""Atomic file writes: config files, CLI outputs and the bundled weights."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

__all__ = ["OutputError", "check_writable", "write_bytes_atomic", "write_files_atomic"]


def _temp_beside(path: Path, kind: str) -> Path:
    # a short name of its own (not the target's: a legal 250-byte name plus a suffix is not)
    return path.with_name(f".kdpm2-{os.getpid()}-{secrets.token_hex(4)}.{kind}")


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
    tmp = _temp_beside(path, "tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class OutputError(OSError):
    """An output file could not be written; the message names it and what was kept."""


def destination(path: Path) -> Path:
    """Return where writing ``path`` lands: the target of a symbolic link, else ``path``.

    Outputs are written through a link (the link stays, its target gets the new file), as
    ``open(path, "w")`` would.
    """
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_writable(path: Path) -> str | None:
    """Return why ``path`` cannot be written as an output, or ``None`` if it can.

    Tries what the write will do (create a file beside it), so a read-only folder or file
    system is found before any work. An existing file that nobody may write to (no write bit,
    e.g. after ``chmod a-w``) is refused even where the process could override it (root):
    a file its owner protected is never replaced.
    """
    try:
        path = destination(path)
        folder = path.parent
        if not folder.is_dir():
            return f"folder {str(folder)!r} does not exist; create it first"
        if path.is_dir():
            return "is a folder; give a file name"
        if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
            return (
                "exists and is read-only; remove it or choose another name (it is never replaced)"
            )
        probe = _temp_beside(path, "probe")
        try:
            with open(probe, "xb"):
                pass
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return f"cannot be written ({exc.strerror or exc})"
    return None


def write_files_atomic(files: Sequence[tuple[str, Path, bytes]]) -> None:
    """Write several files as one: after a failure each holds its old content (or is absent).

    Every file is written in full to a temporary file beside it and flushed first; only then
    are they renamed over their destinations, keeping each old file aside (a hard link, or a
    copy where no link can be made) until all renames are done, so a failed rename puts the old
    files back. Temporary files are removed
    on any exception, ``KeyboardInterrupt`` included.

    Parameters
    ----------
    files : sequence of (label, path, data)
        ``label`` names the file in errors (e.g. ``"--out"``).

    Raises
    ------
    OutputError
        Naming the file that failed and the reason; no destination was changed.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> write_files_atomic([("a", d / "a.txt", b"1"), ("b", d / "b.txt", b"2")])
    >>> sorted(p.name for p in d.iterdir()), (d / "b.txt").read_bytes()
    (['a.txt', 'b.txt'], b'2')
    """
    temps: list[Path] = []
    replaced: list[tuple[Path, Path | None, bool]] = []  # (destination, old file's copy, existed)
    label, path = "", Path()
    files = [(label, destination(path), data) for label, path, data in files]
    try:
        for label, path, _ in files:
            problem = check_writable(path)  # again: the user may have protected it meanwhile
            if problem is not None:
                raise OutputError(f"{label} {str(path)!r}: {problem}; no output was changed")
        for label, path, data in files:  # noqa: B007 - label and path name a failure
            tmp = _temp_beside(path, "tmp")
            temps.append(tmp)
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for (label, path, _), tmp in zip(files, temps, strict=True):  # noqa: B007 - as above
            existed, backup = os.path.lexists(path), None
            if existed:
                backup = _temp_beside(path, "old")
                try:
                    os.link(path, backup, follow_symlinks=False)
                except OSError:  # no hard link here (too many, or none on this file system)
                    shutil.copy2(path, backup)
            replaced.append((path, backup, existed))
            os.replace(tmp, path)
    except BaseException as exc:
        for done, backup, existed in replaced:
            if backup is not None:
                os.replace(backup, done)  # the old file back (nothing happens if it never left)
                backup.unlink(missing_ok=True)
            elif not existed:
                done.unlink(missing_ok=True)
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            kept = "no output was changed" if len(files) > 1 else "it was not changed"
            error = OutputError(
                f"cannot write {label} {str(path)!r}: {exc.strerror or exc}; {kept}"
            )
            error.errno = exc.errno
            raise error from exc
        raise
    for _, backup, _ in replaced:
        if backup is not None:
            backup.unlink(missing_ok=True)
