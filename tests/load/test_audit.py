"""The audit log: one JSON object per line, appended, 0600, ids only."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from load.audit import AuditRecord, append_audit, ensure_audit_log, read_audit
from load.errors import LoadError, TerminalLoadError

WHEN = datetime(2024, 1, 15, 10, 30, 0, 123456, tzinfo=UTC)
REFUSAL = AuditRecord(at=WHEN, via="http", user_id=1, learner_id=3, status=403)


def test_a_refusal_is_one_line_of_ids(tmp_path: Path) -> None:
    log = tmp_path / "deeper" / "audit.jsonl"
    append_audit(log, AuditRecord(at=WHEN, via="http", user_id=1, learner_id=9, status=403))
    assert log.read_bytes() == (
        b'{"at":"2024-01-15T10:30:00.123Z","via":"http","userId":1,"learnerId":9,"status":403}\n'
    )
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_served_export_records_checksum_size_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    record = AuditRecord(
        at=WHEN.astimezone(timezone(timedelta(hours=2))),
        via="http",
        user_id=2,
        learner_id=4,
        status=200,
        sha256="ab" * 32,
        size=123,
        complete=True,
        lessons_exported=1000,
        lessons_total=1050,
    )
    append_audit(log, record)
    (line,) = read_audit(log)
    assert line == {
        "at": "2024-01-15T10:30:00.123Z",
        "via": "http",
        "userId": 2,
        "learnerId": 4,
        "status": 200,
        "sha256": "ab" * 32,
        "bytes": 123,
        "complete": True,
        "lessonsExported": 1000,
        "lessonsTotal": 1050,
        "truncated": True,
    }


def test_appends_never_rewrite(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b'{"earlier":true}\n')
    log.chmod(0o600)
    append_audit(log, AuditRecord(at=WHEN, via="http", user_id=None, learner_id=None, status=401))
    assert read_audit(log)[0] == {"earlier": True}
    assert len(read_audit(log)) == 2


def test_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"

    def write(user: int) -> None:
        for learner in range(200):
            append_audit(
                log, AuditRecord(at=WHEN, via="http", user_id=user, learner_id=learner, status=200)
            )

    threads = [threading.Thread(target=write, args=(u,)) for u in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = log.read_bytes().splitlines()
    assert len(lines) == 1600
    assert all(orjson.loads(line)["status"] == 200 for line in lines)


def test_no_log_yet_reads_empty(tmp_path: Path) -> None:
    assert read_audit(tmp_path / "none.jsonl") == []


def test_an_unwritable_place_is_a_load_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TerminalLoadError, match=r"audit\.jsonl"):
        append_audit(
            blocker / "audit.jsonl",
            AuditRecord(at=WHEN, via="http", user_id=1, learner_id=1, status=200),
        )


def test_ensure_creates_an_empty_private_log(tmp_path: Path) -> None:
    log = tmp_path / "new" / "audit.jsonl"
    ensure_audit_log(log)
    ensure_audit_log(log)  # idempotent, never truncates
    assert log.read_bytes() == b""
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_ensure_fails_where_nothing_can_be_appended(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(TerminalLoadError, match=r"audit\.jsonl"):
        ensure_audit_log(tmp_path / "file" / "audit.jsonl")


@pytest.mark.parametrize("write", [ensure_audit_log, lambda log: append_audit(log, REFUSAL)])
def test_an_existing_log_readable_by_others_is_set_back_to_0600(
    tmp_path: Path, write: Callable[[Path], None]
) -> None:
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"")
    log.chmod(0o644)
    write(log)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


@pytest.mark.parametrize("write", [ensure_audit_log, lambda log: append_audit(log, REFUSAL)])
def test_a_symbolic_link_at_the_log_path_is_refused(
    tmp_path: Path, write: Callable[[Path], None]
) -> None:
    target = tmp_path / "elsewhere.jsonl"
    target.write_bytes(b"")
    target.chmod(0o644)
    log = tmp_path / "audit.jsonl"
    log.symlink_to(target)
    with pytest.raises(TerminalLoadError, match=r"audit\.jsonl"):
        write(log)
    assert target.read_bytes() == b""
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # the link's target is left alone


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_anything_but_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    log = tmp_path / "audit.jsonl"
    if kind == "directory":
        log.mkdir()
    else:
        os.mkfifo(log)
    with pytest.raises(LoadError, match=r"audit\.jsonl"):
        append_audit(log, REFUSAL)


def test_an_archive_manifest_gives_one_line_per_learner_failures_included(tmp_path: Path) -> None:
    from load.audit import audit_manifest
    from load.manifest import Failure, FileEntry, Manifest

    manifest = Manifest.model_construct(
        run_id="2024-01-15",
        started_at="2024-01-15T02:00:00.000Z",
        finished_at="2024-01-15T02:00:00.123456+00:00",
        files=[
            FileEntry(
                path="learner-data-3-2024-01-15.json",
                learner_id=3,
                bytes=10,
                sha256="ab" * 32,
                lessons_exported=1000,
                lessons_total=1050,
                truncated=True,
            ),
        ],
        failures=[Failure(learner_id=4, chunk=0, error="reading the source failed (42P01)")],
    )
    log = tmp_path / "audit.jsonl"
    assert audit_manifest(log, manifest, manifest.files, exported_by=2) == 2
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert lines == [
        {"at": "2024-01-15T02:00:00.123Z", "via": "archive", "userId": 2, "learnerId": 3,
         "status": 200, "sha256": "ab" * 32, "bytes": 10, "complete": True,
         "lessonsExported": 1000, "lessonsTotal": 1050, "runId": "2024-01-15",
         "runStartedAt": "2024-01-15T02:00:00.000Z", "truncated": True},
        {"at": "2024-01-15T02:00:00.123Z", "via": "archive", "userId": 2, "learnerId": 4,
         "status": 500, "runId": "2024-01-15", "runStartedAt": "2024-01-15T02:00:00.000Z"},
    ]  # fmt: skip


def _run_manifest(started_at: str, learners: list[int]) -> object:
    from load.manifest import FileEntry, Manifest

    return Manifest.model_construct(
        run_id="r",
        started_at=started_at,
        finished_at="2024-01-15T02:00:00+00:00",
        files=[
            FileEntry(
                path=f"learner-data-{i}-2024-01-15.json", learner_id=i, bytes=1,
                sha256="ab" * 32, lessons_exported=0, lessons_total=0, truncated=False,
            )
            for i in learners
        ],
        failures=[],
    )  # fmt: skip


def test_a_resumed_run_appends_only_its_missing_lines(tmp_path: Path) -> None:
    """A run killed while appending its lines gets the rest on the rerun, none twice; lines of
    another run that had the same id (started at another time) do not count."""
    from load.audit import audit_manifest

    log = tmp_path / "audit.jsonl"
    earlier = _run_manifest("2024-01-14T02:00:00.000Z", [3, 4, 5])
    audit_manifest(log, earlier, earlier.files, exported_by=None)  # type: ignore[arg-type]
    this = _run_manifest("2024-01-15T02:00:00.000Z", [3, 4, 5])
    first = _run_manifest("2024-01-15T02:00:00.000Z", [3])
    audit_manifest(log, first, first.files, None)  # type: ignore[arg-type]
    with log.open("ab") as handle:  # killed mid-line: a full disk, or a torn write
        handle.write(
            b'{"at":"2024-01-15T02:00:00.000Z","via":"archive","userId":null,"learnerId":4,"runId":"r","runStartedAt":"2024-01-15T02:00'
        )
    # The torn line swallows the next one (learner 4's), so a further rerun appends it again, whole.
    appended = [
        audit_manifest(log, this, this.files, exported_by=None, resumed=True)  # type: ignore[arg-type]
        for _ in range(3)
    ]
    assert appended == [2, 1, 0]
    records = []
    for line in log.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            records.append(orjson.loads(line))
    this_run = sorted(r["learnerId"] for r in records if r["runStartedAt"].startswith("2024-01-15"))
    assert this_run == [3, 4, 5]  # each exactly once among the whole lines
