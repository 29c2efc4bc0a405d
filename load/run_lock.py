"""One writer per run: a lock that two processes writing the same snapshot cannot both hold.

Two firings of a schedule that overlap (a slow run still going when the next one fires), two
schedulers started by mistake, or an operator's command during the nightly run must never write
the same run directory at once. On a local disk (or a shared file system with working POSIX
locks) the lock is `flock(2)` on `<dest>/.incomplete/<run>.lock`: the kernel releases it when its
holder exits, however it exits (kill -9 included), so a crashed run never blocks the next one.
The file holds who has it (pid, host, since when), for the refusal message; it is removed on
release.

Object stores have no such lock (no atomic create-if-absent through fsspec's common interface):
there `run_lock` holds nothing, and the README tells the operator to run one scheduler.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from load.destination import INCOMPLETE_DIR, Destination, remove_incomplete_root
from load.errors import TerminalLoadError, os_error


class RunLocked(TerminalLoadError):
    """Another process is writing this run now."""


def lock_path(destination: Destination, run_id: str) -> Path:
    """Where the lock of `run_id` lives (beside the run's incomplete directory, never in it)."""
    destination.incomplete_dir(run_id)  # checks the run id
    return Path(destination.root, INCOMPLETE_DIR, f"{run_id}.lock")


@contextlib.contextmanager
def run_lock(destination: Destination, run_id: str) -> Iterator[None]:
    """Hold the run's lock for the duration, or raise RunLocked at once naming its holder.

    Never waits: a second writer is refused in one line, and the schedule (one run at a time)
    or the operator decides when to try again.
    """
    if not destination.is_local:
        yield
        return
    path = lock_path(destination, run_id)
    descriptor = _acquire(path, run_id)
    try:
        yield
    finally:
        try:
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            os.close(descriptor)  # releases the lock, whatever happened above
        remove_incomplete_root(destination)


def check_unlocked(destination: Destination, run_id: str) -> None:
    """Raise RunLocked if another process holds the run's lock now (a check, not a hold)."""
    if destination.is_local and not lock_path(destination, run_id).exists():
        return  # nobody holds it, and checking creates nothing
    with run_lock(destination, run_id):
        pass


def _acquire(path: Path, run_id: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(descriptor)
                os.close(descriptor)
                raise RunLocked(
                    f"run {run_id} is being written by another process ({holder}); this one "
                    "stops without writing. Wait for it to finish, or stop it first"
                ) from None
            except BaseException:
                os.close(descriptor)
                raise
            # The holder before us may have removed the file between our open and our lock:
            # then we locked a file nobody else will see, so start again on the new one.
            if _same_file(descriptor, path):
                break
            os.close(descriptor)
        note = f"pid {os.getpid()} on {socket.gethostname()} since {_now()}"
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, note.encode(), 0)
        except BaseException:
            os.close(descriptor)  # never keep a lock this process will not release
            raise
        return descriptor
    except RunLocked:
        raise
    except OSError as exc:
        raise os_error(exc, f"locking {path}") from None


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _holder(descriptor: int) -> str:
    text = os.pread(descriptor, 200, 0).decode(errors="replace").strip()
    return text or "holder unknown"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
