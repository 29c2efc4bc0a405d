"""Re-checking a published snapshot against its manifest (`learner-export verify`).

Every document: present, the recorded size and sha256, decryptable when encrypted (with the
configured key), valid JSON, valid against the document schema, about the learner the manifest
names. Every Parquet part: present, the recorded size and sha256, and the recorded row count in
its footer. The data dictionary (`schema.json`), when listed: the recorded size and sha256, and
valid JSON. The analyst report (`report.html`), when listed: its size, sha256, and an HTML
page. Files the manifest does not list are reported too. Problems name paths, ids and checks,
never content.

Memory does not grow with the learners but by the directory's listing (a name per file) and the
problems found: the manifest's entries are streamed twice (once to trust them, once to check
their files), one held at a time, never the ~1.4 KB a learner `Manifest` holds.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import fsspec
import orjson
from cryptography.fernet import Fernet

from load.codec import decode_stored, stored_format
from load.destination import read_if_exists
from load.errors import LoadError
from load.manifest import FileEntry, ManifestError, ParquetPartEntry, StoredEntry
from load.parquet import read_parquet_rows
from load.snapshot_files import (
    MISSING,
    SnapshotError,
    SnapshotNotFound,
    bytes_problem,
    file_problem,
    read_entries,
    read_head,
    unlisted_files,
)
from transform.page_html import PAGE_START
from transform.schema import schema_errors


@dataclass
class VerifyReport:
    """What was checked, and every mismatch found (empty when the snapshot is sound)."""

    documents: int = 0
    parquet_parts: int = 0
    pages: int = 0
    problems: list[str] = field(default_factory=list)


def verify_snapshot(
    fs: fsspec.AbstractFileSystem, directory: str, fernet: Fernet | None
) -> VerifyReport:
    """Check the snapshot in `directory` against its manifest.json. A directory that does not
    exist is no mismatch: `SnapshotNotFound` is raised."""
    report = VerifyReport()
    try:
        head = read_head(fs, directory, "manifest")
        # A first pass over the entries: an untrusted manifest is one problem, nothing checked.
        unlisted = unlisted_files(fs, directory, head, read_entries(fs, directory))
    except SnapshotNotFound:
        raise
    except (SnapshotError, ManifestError) as exc:
        report.problems.append(str(exc).removeprefix("manifest: "))
        return report
    try:
        for entry in read_entries(fs, directory):
            report.documents += 1
            report.problems += _document_problems(fs, directory, entry, fernet)
            if entry.page is not None:
                report.pages += 1
                report.problems += _page_problems(fs, directory, entry.page, fernet)
    except ManifestError as exc:  # rewritten since the first pass
        report.problems.append(str(exc))
    for table in head.parquet.values():
        for part in table.parts:
            report.parquet_parts += 1
            report.problems += _parquet_problems(fs, directory, part)
    if head.dictionary is not None:
        report.problems += _dictionary_problems(fs, directory, head.dictionary)
    if head.report is not None:
        report.problems += _report_problems(fs, directory, head.report)
    report.problems += [f"{name}: not listed in the manifest" for name in unlisted]
    return report


def _document_problems(
    fs: fsspec.AbstractFileSystem, directory: str, entry: FileEntry, fernet: Fernet | None
) -> list[str]:
    path = entry.path
    stored = read_if_exists(fs, posixpath.join(directory, path))
    if stored is None:
        return [f"{path}: {MISSING}"]
    if problem := bytes_problem(stored, entry.bytes, entry.sha256):
        return [f"{path}: {problem}"]
    if stored_format(path).encrypted and fernet is None:
        return [f"{path}: encrypted, and no encryption key is configured to check it"]
    try:
        document = orjson.loads(decode_stored(path, stored, fernet))
    except LoadError as exc:
        return [str(exc)]
    except orjson.JSONDecodeError:
        return [f"{path}: not valid JSON"]
    problems = [f"{path}: schema: {line}" for line in schema_errors(document)]
    learner = document.get("learner") if isinstance(document, dict) else None
    if not isinstance(learner, dict) or learner.get("id") != entry.learner_id:
        problems.append(f"{path}: is not the document of learner {entry.learner_id}")
    return problems


def _page_problems(
    fs: fsspec.AbstractFileSystem, directory: str, entry: StoredEntry, fernet: Fernet | None
) -> list[str]:
    """A readable page (`archive --html`): present, its size and sha256, decodable, HTML text."""
    stored = read_if_exists(fs, posixpath.join(directory, entry.path))
    if stored is None:
        return [f"{entry.path}: {MISSING}"]
    if problem := bytes_problem(stored, entry.bytes, entry.sha256):
        return [f"{entry.path}: {problem}"]
    if stored_format(entry.path).encrypted and fernet is None:
        return [f"{entry.path}: encrypted, and no encryption key is configured to check it"]
    try:
        page = decode_stored(entry.path, stored, fernet)
    except LoadError as exc:
        return [str(exc)]
    if not page.startswith(PAGE_START):
        return [f"{entry.path}: not a readable page"]
    return []


def _dictionary_problems(
    fs: fsspec.AbstractFileSystem, directory: str, entry: StoredEntry
) -> list[str]:
    stored = read_if_exists(fs, posixpath.join(directory, entry.path))
    if stored is None:
        return [f"{entry.path}: {MISSING}"]
    if problem := bytes_problem(stored, entry.bytes, entry.sha256):
        return [f"{entry.path}: {problem}"]
    try:
        orjson.loads(stored)
    except orjson.JSONDecodeError:
        return [f"{entry.path}: not valid JSON"]
    return []


def _report_problems(
    fs: fsspec.AbstractFileSystem, directory: str, entry: StoredEntry
) -> list[str]:
    """The analyst report (`archive --report`): its size and sha256, and that it is an HTML
    page (what it shows was checked against the tables when it was made)."""
    stored = read_if_exists(fs, posixpath.join(directory, entry.path))
    if stored is None:
        return [f"{entry.path}: {MISSING}"]
    if problem := bytes_problem(stored, entry.bytes, entry.sha256):
        return [f"{entry.path}: {problem}"]
    if not stored.startswith(b"<!doctype html>"):
        return [f"{entry.path}: not an HTML page"]
    return []


def _parquet_problems(
    fs: fsspec.AbstractFileSystem, directory: str, part: ParquetPartEntry
) -> list[str]:
    """The part's size and sha256, and (even when those differ, to say more) its footer's row
    count, against the manifest."""
    full = posixpath.join(directory, part.path)
    problem = file_problem(fs, full, part.bytes, part.sha256)
    if problem == MISSING:
        return [f"{part.path}: {problem}"]
    problems = [f"{part.path}: {problem}"] if problem else []
    try:
        rows = read_parquet_rows(fs, full)
    except LoadError:
        return [*problems, f"{part.path}: not a readable Parquet file"]
    if rows != part.rows:
        problems.append(f"{part.path}: {rows} rows, the manifest says {part.rows}")
    return problems
