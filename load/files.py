"""Atomic, checksummed writes of whole files to a local directory."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from load.errors import LoadError, TerminalLoadError, TransientLoadError

FILE_MODE = 0o600
"""Exports hold children's data: readable and writable by their owner only."""

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY})


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file that exists, complete, at `path`: `size` bytes whose sha256 is `sha256` (hex)."""

    path: Path
    size: int
    sha256: str


def write_atomic(
    directory: Path, name: str, data: bytes, *, sync_directory: bool = True
) -> WrittenFile:
    """Write `data` to `directory/name` so that the file is either absent or complete.

    The bytes go to a hidden temporary file in the same directory (same file system, so the
    rename is atomic), are flushed to disk, and only then renamed over `name`; the directory entry
    is flushed too, so a power loss after return keeps the file. An existing file of that name is
    replaced. On any error the temporary file is removed and a `LoadError` names the path.
    With `sync_directory=False` the directory entry is left to the caller, who writes many files
    into one directory and flushes it once (`fsync_directory`).
    """
    target = directory / name
    temporary = directory / f".{name}.{secrets.token_hex(6)}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        if sync_directory:
            fsync_directory(directory)
    except OSError as exc:
        raise _translate(exc, target) from None
    return WrittenFile(path=target, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def fsync_directory(directory: Path) -> None:
    """Flush `directory`'s entries (the renames into it) to disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _translate(exc: OSError, target: Path) -> LoadError:
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientLoadError(f"writing {target} failed ({reason}); it may be retried")
    return TerminalLoadError(f"writing {target} failed ({reason})")
