"""The audit log: one JSON object per line, appended, never rewritten.

Every export, served or refused, leaves one line; the HTTP endpoint writes them now and the
archival flows will share the same file format. A line holds ids, a status, a timestamp, counts and
a checksum: never a name, an e-mail address, a token or a document byte.

Appends are atomic: the file is opened with `O_APPEND` and each line goes out in a single
`write(2)`, so lines from concurrent writers (threads, or the server's worker processes) never
interleave or overwrite each other. The file is created with mode 0600 and kept so (it reveals who
exported which child's data): an existing log readable by others is set back to 0600. Only a
regular file is appended to: a symbolic link at the log's path is refused (`O_NOFOLLOW`), so the
lines cannot be redirected into another file, and so is anything else that is not a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from load.errors import TerminalLoadError, os_error
from load.files import FILE_MODE
from load.manifest import FileEntry, ManifestHead

ARCHIVE_CHANNEL = "archive"
"""`via` of the lines an archive run appends."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One export attempt.

    `user_id` is who asked (None when they could not be authenticated), `learner_id` whose data
    was asked for (None when no valid id was given), `status` the outcome as an HTTP status code.
    `sha256` (hex) and `size` describe the served document bytes, before any content encoding;
    both are None unless the document was served. `complete` is False when the transfer broke off
    before the last byte. `lessons_total` > `lessons_exported` records a truncated document.
    An archive run's lines carry its `run_id` and `run_started_at` (together they name one run,
    even when a run id is reused after its snapshot was deleted). `event` names what happened
    when it was not an export attempt (an abandoned run), with the `files` it concerned.
    """

    at: datetime
    via: str
    user_id: int | None
    learner_id: int | None
    status: int
    sha256: str | None = None
    size: int | None = None
    complete: bool | None = None
    lessons_exported: int | None = None
    lessons_total: int | None = None
    run_id: str | None = None
    run_started_at: str | None = None
    event: str | None = None
    files: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as the JSON object of its line; keys in a fixed order, `at` in UTC."""
        at = self.at if self.at.tzinfo is not None else self.at.replace(tzinfo=UTC)
        line: dict[str, Any] = {
            "at": at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "via": self.via,
            "userId": self.user_id,
            "learnerId": self.learner_id,
            "status": self.status,
        }
        optional: Mapping[str, Any] = {
            "sha256": self.sha256,
            "bytes": self.size,
            "complete": self.complete,
            "lessonsExported": self.lessons_exported,
            "lessonsTotal": self.lessons_total,
            "runId": self.run_id,
            "runStartedAt": self.run_started_at,
            "event": self.event,
            "files": self.files,
        }
        line.update({key: value for key, value in optional.items() if value is not None})
        if self.lessons_total is not None and self.lessons_exported is not None:
            line["truncated"] = self.lessons_total > self.lessons_exported
        return line


def written_record(*, at: datetime, via: str, user_id: int | None, entry: FileEntry) -> AuditRecord:
    """The record of a document written whole to a file (status 200, complete), from the
    file's manifest entry (its stored size and sha256, its lesson counts)."""
    return AuditRecord(
        at=at,
        via=via,
        user_id=user_id,
        learner_id=entry.learner_id,
        status=200,
        sha256=entry.sha256,
        size=entry.bytes,
        complete=True,
        lessons_exported=entry.lessons_exported,
        lessons_total=entry.lessons_total,
    )


def audit_manifest(
    path: Path,
    manifest: ManifestHead,
    entries: Iterable[FileEntry],
    exported_by: int | None,
    *,
    resumed: bool = False,
) -> int:
    """Append one line per learner of a finished archive run to the log at `path`: 200 with the
    stored file's sha256 and size for each document (its `entries`, streamed: one held at a
    time), 500 for each learner that failed. Returns the number of lines appended.

    Exactly once: when `resumed` (an earlier attempt may have appended some of this run's lines
    before it was killed), the log is searched for the run's lines first and only the missing
    ones are appended; the archive always asks for that (the search streams the log, reading
    only the lines that name the run).
    """
    at = datetime.fromisoformat(manifest.finished_at)
    run_id, started = manifest.run_id, manifest.started_at
    present = audited_learners(path, run_id, started) if resumed else set()
    written = (
        dataclasses.replace(
            written_record(at=at, via=ARCHIVE_CHANNEL, user_id=exported_by, entry=entry),
            run_id=run_id,
            run_started_at=started,
        )
        for entry in entries
    )
    failed = (
        AuditRecord(
            at=at,
            via=ARCHIVE_CHANNEL,
            user_id=exported_by,
            learner_id=f.learner_id,
            status=500,
            run_id=run_id,
            run_started_at=started,
        )
        for f in manifest.failures
    )
    appended = 0
    for record in itertools.chain(written, failed):
        if record.learner_id not in present:
            append_audit(path, record)
            appended += 1
    return appended


def audited_learners(path: Path, run_id: str, run_started_at: str) -> set[int | None]:
    """The learner ids of the lines of one archive run (`run_id` started at `run_started_at`)
    already in the log at `path`. A torn line (a disk that filled mid-write) is skipped."""
    needle = orjson.dumps({"runId": run_id, "runStartedAt": run_started_at})[1:-1]
    found: set[int | None] = set()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return found
    with handle:
        for line in handle:  # lines of a few hundred bytes: the log is streamed, never held
            if needle not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                found.add(orjson.loads(line).get("learnerId"))
    return found


def abandoned_record(
    *, at: datetime, user_id: int | None, run_id: str, run_started_at: str | None, files: int
) -> AuditRecord:
    """The line of an unfinished archive run given up by the operator: its `files` written so
    far were removed, never delivered (status 410, Gone)."""
    return AuditRecord(
        at=at,
        via=ARCHIVE_CHANNEL,
        user_id=user_id,
        learner_id=None,
        status=410,
        run_id=run_id,
        run_started_at=run_started_at,
        event="run-abandoned",
        files=files,
    )


def append_audit(path: Path, record: AuditRecord) -> None:
    """Append `record` to the audit log at `path` as one line, creating the file (0600) and its
    directory if needed. Raises a `LoadError` naming the path on failure (a symbolic link or
    anything but a regular file at `path` is a failure)."""
    line = orjson.dumps(record.as_json()) + b"\n"
    try:
        descriptor = _open_log(path)
        try:
            written = os.write(descriptor, line)
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise os_error(exc, f"appending to {path}") from None
    if written != len(line):
        # A regular file only writes short when the disk is full; the line is then torn.
        raise TerminalLoadError(f"appending to {path} wrote {written} of {len(line)} bytes")


def ensure_audit_log(path: Path) -> None:
    """Create the log at `path` (mode 0600, and its directory) if it is missing, set an existing
    one back to 0600, and prove it can be appended to, so that a server fails at start rather
    than serving exports it cannot record. Raises a `LoadError` naming the path."""
    try:
        os.close(_open_log(path))
    except OSError as exc:
        raise os_error(exc, f"appending to {path}") from None


def _open_log(path: Path) -> int:
    """A descriptor appending to the regular file at `path` (created 0600), whose mode is 0600.

    `O_NOFOLLOW` makes a symbolic link fail with ELOOP; `O_NONBLOCK` keeps a FIFO from blocking
    the open, and the check below refuses it. The directory is made only when the open finds it
    missing: a server appends a line per request, and `mkdir(exist_ok=True)` cost each a failed
    system call, an exception and a stat.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, FILE_MODE)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, flags, FILE_MODE)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if stat.S_IMODE(status.st_mode) != FILE_MODE:
            os.fchmod(descriptor, FILE_MODE)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every record of the log at `path`, oldest first ([] when there is no log yet)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [orjson.loads(line) for line in data.splitlines() if line.strip()]
