"""Errors raised while writing outputs, and the one place that decides which OS errors are worth
a retry. Messages name the destination path, never file content."""

from __future__ import annotations

import errno


class LoadError(Exception):
    """Base class of every error the load stage raises."""


class TransientLoadError(LoadError):
    """The destination refused or broke off in a way a retry may fix (timeouts, throttling)."""


class TerminalLoadError(LoadError):
    """Retrying will not help: no permission, no space, not a directory, a name clash."""


TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY, errno.ECONNRESET, errno.ECONNREFUSED}
)
"""OS errors after which the same write may succeed: the resource was busy or interrupted, or a
remote file system (NFS, an object store through fsspec) timed out or dropped the connection.
Everything else (ENOSPC, EACCES, EROFS, ENOTDIR, EISDIR, ELOOP, ...) needs a person."""


def is_transient_os_error(exc: OSError) -> bool:
    """Whether the same operation may succeed if retried (see TRANSIENT_ERRNOS). Timeouts and
    dropped connections count whatever their errno (fsspec back ends raise them without one)."""
    return isinstance(exc, TimeoutError | ConnectionError) or exc.errno in TRANSIENT_ERRNOS


def os_error(exc: OSError, doing: str) -> LoadError:
    """`exc` as the LoadError of its class: `doing` names the action and the path ("writing
    /x/y.json"); the reason is the OS's text for the errno (never the path's content)."""
    reason = exc.strerror or type(exc).__name__
    if is_transient_os_error(exc):
        return TransientLoadError(f"{doing} failed ({reason}); it may be retried")
    return TerminalLoadError(f"{doing} failed ({reason})")
