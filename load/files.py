"""Atomic, checksummed writes of whole files to a local directory."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from load.errors import os_error

FILE_MODE = 0o600
"""Exports hold children's data: readable and writable by their owner only."""


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """A file that exists, complete, at `path`: `size` bytes whose sha256 is `sha256` (hex)."""

    path: Path
    size: int
    sha256: str


def write_atomic(directory: Path, name: str, data: bytes) -> WrittenFile:
    """Write `data` to `directory/name` so that the file is either absent or complete.

    The bytes go to a hidden temporary file in the same directory (same file system, so the
    rename is atomic), are flushed to disk, and only then renamed over `name`; the directory entry
    is flushed too, so a power loss after return keeps the file. An existing file of that name is
    replaced. On any error the temporary file is removed and a `LoadError` names the path.
    """
    with AtomicBatch(directory) as batch:
        return batch.add(name, data)


class AtomicBatch:
    """Atomic writes of many files into one directory, made durable together.

    `add` writes each file under a hidden temporary name (mode 0600); `commit` flushes every
    temporary file to disk, only then renames each over its name, and flushes the directory.
    Invariant: a file under its final name is always complete, even after a power loss; a crash
    before `commit` leaves only temporary files (`.NAME.HEX.tmp`). One journal commit of the file
    system serves the whole batch, where an fsync per file pays one each (~15% of an archive).
    Used as a context manager it commits on success and removes its temporary files on error.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pending: list[tuple[Path, Path]] = []

    def add(self, name: str, data: bytes) -> WrittenFile:
        """Write `data` for `directory/name` (visible under that name after `commit`)."""
        return self.add_pieces(name, (data,))

    def add_pieces(self, name: str, pieces: Iterable[bytes]) -> WrittenFile:
        """Write the concatenation of `pieces` for `directory/name`, one piece at a time, so a
        file larger than memory can be written (visible under that name after `commit`)."""
        target = self.directory / name
        temporary = self.directory / f".{name}.{secrets.token_hex(6)}.tmp"
        digest, size = hashlib.sha256(), 0
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    for piece in pieces:
                        handle.write(piece)
                        digest.update(piece)
                        size += len(piece)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise os_error(exc, f"writing {target}") from None
        self._pending.append((temporary, target))
        return WrittenFile(path=target, size=size, sha256=digest.hexdigest())

    def commit(self) -> None:
        """Make every added file durable, then visible under its name."""
        target = self.directory
        try:
            for temporary, _ in self._pending:
                descriptor = os.open(temporary, os.O_RDONLY)
                try:
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
            for temporary, target in self._pending:
                temporary.replace(target)
            self._pending.clear()
            fsync_directory(self.directory)
        except OSError as exc:
            raise os_error(exc, f"writing {target}") from None

    def abort(self) -> None:
        """Remove the temporary files of everything added and not committed."""
        for temporary, _ in self._pending:
            temporary.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> AtomicBatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            try:
                self.commit()
            finally:
                self.abort()  # whatever a failed commit left
        else:
            self.abort()


def fsync_directory(directory: Path) -> None:
    """Flush `directory`'s entries (the renames into it) to disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
