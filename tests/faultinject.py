"""Systematic fault injection into the file system calls of a run, the way SQLite tests itself.

`Faults` wraps the `os` functions (and `os.fdopen`'s file objects) that write, flush, sync, rename,
remove and close, but only for paths below the directories it watches (the destination and the
audit log's directory) and the descriptors opened there: pytest, SQLite and everything else are
untouched. A clean run counts the calls of each kind; then each fault is "fail the Nth call of
kind K" for every N:

- `errno`: the Nth call raises OSError(errno) (ENOSPC, EIO, ...) without doing anything, as a
  full or failing disk would; the run goes on as the code decides.
- `kill`: just before the Nth mutating call the process "dies": that call and every later
  mutating call raise `Killed` (a BaseException nothing catches) without touching the disk, so
  the clean-up handlers a real kill -9 would never run cannot tidy up either. Descriptors still
  close, as the kernel closes them at a process's death (which also drops its flock locks).

`calls` records every intercepted call as (kind, path), so a test can print what it broke.
Consecutive writes into one file are one point: the first of them is counted and can fail; the
others leave the same state (a partial temporary file) and are not counted.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

MUTATING = ("open", "write", "flush", "fsync", "rename", "unlink", "rmdir", "mkdir")
"""Kinds of call that change what is on disk (a kill lands before one of these)."""
ERROR_KINDS = ("write", "flush", "fsync", "rename", "close")
"""Kinds the disk-error faults (ENOSPC, EIO) hit, as the issue lists them."""


class Killed(BaseException):
    """The simulated kill -9: not an Exception, so no `except Exception` handler stops it."""


class Faults:
    """Counts, and optionally breaks, the file system calls under `roots`."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [str(r.resolve()) for r in roots]
        self.counts: Counter[str] = Counter()
        self.calls: list[tuple[str, str]] = []
        self.fail_kind: str | None = None
        self.fail_at = 0
        self.fail_errno = 0
        self.kill_at = 0  # kill before the Nth mutating call; 0: never
        self.act_at = 0  # run `action` once before the Nth mutating call; 0: never
        self.action: Callable[[], None] | None = None
        self.broken_from = 0  # every mutating call from the Nth on fails; 0: never
        self.mutations = 0
        self.dead = False
        self.fired = False
        self.on_call: Callable[[str, int], None] | None = None
        self._fds: dict[int, str] = {}

    # --- configuration ---------------------------------------------------------------------

    def arm_error(self, kind: str, n: int, code: int) -> None:
        self._reset()
        self.fail_kind, self.fail_at, self.fail_errno = kind, n, code

    def arm_kill(self, n: int) -> None:
        self._reset()
        self.kill_at = n

    def arm_action(self, n: int, action: Callable[[], None]) -> None:
        """Do `action` (remove the destination, make it read-only...) just before the Nth call
        that changes the disk, then let that call go on against the changed world."""
        self._reset()
        self.act_at, self.action = n, action

    def arm_from(self, n: int, code: int) -> None:
        """From the Nth call that changes the disk on, every such call fails with `code` (what
        a file system remounted read-only does: EROFS)."""
        self._reset()
        self.broken_from, self.fail_errno = n, code

    def disarm(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.counts.clear()
        self.calls.clear()
        self.fail_kind, self.fail_at, self.fail_errno, self.kill_at = None, 0, 0, 0
        self.act_at, self.action = 0, None
        self.broken_from = 0
        self.mutations, self.dead, self.fired = 0, False, False

    # --- the hook every wrapper calls ------------------------------------------------------

    def _watched(self, path: Any) -> str | None:
        try:
            text = os.fsdecode(path)
        except TypeError:
            return None
        full = os.path.abspath(text)  # noqa: PTH100 (a str, and no symlink resolution)
        return full if any(full == r or full.startswith(r + os.sep) for r in self.roots) else None

    def _hit(self, kind: str, where: str) -> None:
        previous = self.calls[-1] if self.calls else None
        self.calls.append((kind, where))
        if kind == "write" and previous == ("write", where):
            # The rest of one file's writes (Parquet streams a part in many): a fault there leaves
            # the same state as at its first write (a partial temporary file), so one point.
            if self.dead:
                raise Killed("write after the kill")
            return
        self.counts[kind] += 1
        if self.on_call is not None:
            self.on_call(kind, self.counts[kind])
        if kind in MUTATING:
            if self.dead:
                raise Killed(f"{kind} after the kill")
            self.mutations += 1
            if self.kill_at and self.mutations == self.kill_at:
                self.dead = self.fired = True
                raise Killed(f"killed before {kind} {where}")
            if self.broken_from and self.mutations >= self.broken_from:
                self.fired = True
                raise OSError(self.fail_errno, os.strerror(self.fail_errno), where)
            if self.act_at and self.mutations == self.act_at and self.action is not None:
                self.fired = True
                self.action()
        if kind == self.fail_kind and self.counts[kind] == self.fail_at:
            self.fired = True
            raise OSError(self.fail_errno, os.strerror(self.fail_errno), where)

    # --- installation ----------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
        """The wrappers in place for the duration (and the real functions back after it)."""
        with monkeypatch.context() as patch:
            yield from self._install(patch)

    def _install(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
        real = {name: getattr(os, name) for name in (
            "open", "write", "pwrite", "fsync", "rename", "replace", "unlink", "remove", "rmdir",
            "mkdir", "close", "fdopen", "ftruncate",
        )}  # fmt: skip
        faults = self

        def wrap_path(name: str, kind: str) -> None:
            def wrapper(path: Any, *args: Any, **kwargs: Any) -> Any:
                where = faults._watched(path)
                if where is not None:
                    faults._hit(kind, where)
                return real[name](path, *args, **kwargs)

            monkeypatch.setattr(os, name, wrapper)

        def wrap_two(name: str) -> None:
            def wrapper(source: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
                where = faults._watched(source) or faults._watched(target)
                if where is not None:
                    faults._hit("rename", where)
                return real[name](source, target, *args, **kwargs)

            monkeypatch.setattr(os, name, wrapper)

        def wrap_fd(name: str, kind: str) -> None:
            def wrapper(fd: int, *args: Any, **kwargs: Any) -> Any:
                where = faults._fds.get(fd)
                if where is not None:
                    if kind == "close":
                        faults._fds.pop(fd, None)
                        try:
                            faults._hit(kind, where)
                        finally:  # a failed close still releases the descriptor
                            real[name](fd, *args, **kwargs)
                        return None
                    faults._hit(kind, where)
                return real[name](fd, *args, **kwargs)

            monkeypatch.setattr(os, name, wrapper)

        def opened(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            where = faults._watched(path)
            if where is not None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                faults._hit("open", where)
            fd: int = real["open"](path, flags, *args, **kwargs)
            if where is not None:
                faults._fds[fd] = where
            return fd

        def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            handle = real["fdopen"](fd, *args, **kwargs)
            where = faults._fds.pop(fd, None)
            return handle if where is None else _FaultyFile(handle, faults, where)

        monkeypatch.setattr(os, "open", opened)
        monkeypatch.setattr(os, "fdopen", fdopen)
        for name, kind in (("unlink", "unlink"), ("remove", "unlink"), ("rmdir", "rmdir"),
                           ("mkdir", "mkdir")):  # fmt: skip
            wrap_path(name, kind)
        wrap_two("rename")
        wrap_two("replace")
        for name, kind in (("write", "write"), ("pwrite", "write"), ("fsync", "fsync"),
                           ("close", "close"), ("ftruncate", "write")):  # fmt: skip
            wrap_fd(name, kind)
        try:
            yield self
        finally:
            self._reset()


class _FaultyFile:
    """A file object from `os.fdopen` whose write, flush and close go through the faults."""

    def __init__(self, handle: Any, faults: Faults, where: str) -> None:
        self._handle, self._faults, self._where = handle, faults, where

    def write(self, data: bytes) -> int:
        self._faults._hit("write", self._where)
        return int(self._handle.write(data))

    def flush(self) -> None:
        self._faults._hit("flush", self._where)
        self._handle.flush()

    def close(self) -> None:
        try:
            self.flush()  # what closing a buffered file does first
            self._faults._hit("close", self._where)
        finally:
            self._handle.close()

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


ERRNOS = {"ENOSPC": errnos.ENOSPC, "EIO": errnos.EIO}
