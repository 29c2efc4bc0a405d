"""`load.errors.os_error`: the one transient/terminal decision for OS errors, the same for every
writer (files, the audit log, Parquet parts, destinations), one case per errno class."""

from __future__ import annotations

import errno
import os
from datetime import datetime
from pathlib import Path

import pytest

from load.audit import AuditRecord, append_audit
from load.errors import TerminalLoadError, TransientLoadError, os_error
from load.files import write_atomic


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (errno.EAGAIN, True),  # resource temporarily unavailable (was terminal for Parquet)
        (errno.EINTR, True),
        (errno.ETIMEDOUT, True),
        (errno.EBUSY, True),
        (errno.ECONNRESET, True),
        (errno.ECONNREFUSED, True),
        (errno.ENOSPC, False),
        (errno.EDQUOT, False),
        (errno.EACCES, False),
        (errno.EPERM, False),
        (errno.EROFS, False),
        (errno.ENOENT, False),
        (errno.ENOTDIR, False),
        (errno.EISDIR, False),
        (errno.ELOOP, False),
        (errno.EIO, False),
    ],
)
def test_each_errno_class_is_decided_once(code: int, transient: bool) -> None:
    error = os_error(OSError(code, os.strerror(code)), "writing /x/y.json")

    assert isinstance(error, TransientLoadError if transient else TerminalLoadError)
    assert str(error).startswith(f"writing /x/y.json failed ({os.strerror(code)})")
    assert str(error).endswith("; it may be retried") is transient


@pytest.mark.parametrize("exc", [TimeoutError(), ConnectionResetError(), BrokenPipeError()])
def test_timeouts_and_dropped_connections_are_transient_without_an_errno(exc: OSError) -> None:
    assert isinstance(os_error(exc, "writing s3://b/x"), TransientLoadError)


def test_real_writers_report_through_it(tmp_path: Path) -> None:
    """Real errors of the file writer and of the audit log: terminal, naming the path."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")

    with pytest.raises(TerminalLoadError, match=r"writing .*not-a-directory.* \(Not a directory\)"):
        write_atomic(blocker / "sub", "x.json", b"{}")
    record = AuditRecord(at=datetime(2024, 1, 1), via="cli", user_id=1, learner_id=3, status=200)
    with pytest.raises(TerminalLoadError, match=r"appending to .*not-a-directory/log failed \("):
        append_audit(blocker / "log", record)
