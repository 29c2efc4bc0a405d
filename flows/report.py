"""The analyst report of a snapshot: its tables read back (checked against the manifest), the
figures built and the page rendered; and, for `archive --report`, the page written into the run.

Plain functions, free of Prefect: the `report` command calls `snapshot_report`, the archive
recipe calls `write_report` between the manifest and the publication.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa

from flows.run import rewrite_manifest
from load.destination import Destination, write_file
from load.manifest import FileEntry, ManifestError, ManifestHead, StoredEntry
from load.snapshot_files import SnapshotError, read_entries, read_head
from load.snapshot_tables import read_table
from transform.analyst_schema import TABLE_SCHEMAS
from transform.report_figures import (
    DEFAULT_MIN_CELL,
    DICTIONARY_COLUMNS,
    NO_VALUE,
    TABLE_COLUMNS,
    ReportFrames,
    SnapshotFacts,
    frames,
    ranked_questions,
)
from transform.report_html import report_page

REPORT_NAME = "report.html"
"""The report's name inside a snapshot written with `archive --report`."""


def snapshot_facts(manifest: ManifestHead, entries: Iterable[FileEntry]) -> SnapshotFacts:
    """What the report takes from the manifest and its `entries`: the run, its export time, and
    truncation (the entries are read only when the manifest counts a truncated learner)."""
    truncated = [e for e in entries if e.truncated] if manifest.counts.truncated else []
    return SnapshotFacts(
        run_id=manifest.run_id,
        exported_at=manifest.export_date,
        truncated_learners=len(truncated),
        lessons_left_out=sum(e.lessons_total - e.lessons_exported for e in truncated),
        skipped_tables=tuple(manifest.parquet_skipped),
    )


def report_frames(
    fs: fsspec.AbstractFileSystem,
    directory: str,
    manifest: ManifestHead,
    name: str,
    min_cell: int = DEFAULT_MIN_CELL,
) -> ReportFrames:
    """The report's frames of the snapshot in `directory`, every part checked as it is read
    (SnapshotError, naming the snapshot and the part, when one does not match the manifest),
    with the text of the questions a report with this `min_cell` ranks."""

    def read(table: str, columns: list[str], **options: Any) -> pa.Table | None:
        schema = TABLE_SCHEMAS[table]
        return read_table(fs, directory, manifest, table, columns, schema, **options)

    try:
        tables = {
            table: read(table, columns, dictionary=DICTIONARY_COLUMNS)
            for table, columns in TABLE_COLUMNS.items()
        }
        data = frames(snapshot_facts(manifest, read_entries(fs, directory)), tables)
        texts = _question_texts(read, ranked_questions(data, min_cell))
    except (SnapshotError, ManifestError) as exc:
        raise SnapshotError(f"{name}: {exc}") from None
    return dataclasses.replace(data, question_texts=texts)


def _question_texts(
    read: Callable[..., pa.Table | None], hashes: list[str]
) -> dict[str, tuple[str, str]]:
    """Subject and text of these questions (by hash): the least question id of each in
    quiz_answers, its row in quiz_questions. Reads those rows only (one more pass over each)."""
    if not hashes:
        return {}
    answers = read(
        "quiz_answers", ["question_hash", "question_id"], where=("question_hash", hashes)
    )
    first: dict[str, str] = {}
    for row in [] if answers is None else answers.to_pylist():
        if row["question_id"] is not None:
            known = first.get(row["question_hash"], row["question_id"])
            first[row["question_hash"]] = min(known, row["question_id"])
    ids = sorted(set(first.values()))
    questions = read("quiz_questions", ["question_id", "subject", "question"],
                     where=("question_id", ids))  # fmt: skip
    found = {
        row["question_id"]: (row["subject"] or NO_VALUE, row["question"] or NO_VALUE)
        for row in ([] if questions is None else questions.to_pylist())
    }
    return {h: found[first[h]] for h in hashes if first.get(h) in found}


def snapshot_report(
    fs: fsspec.AbstractFileSystem,
    directory: str,
    *,
    name: str,
    min_cell: int = DEFAULT_MIN_CELL,
    before: tuple[fsspec.AbstractFileSystem, str, str] | None = None,
) -> tuple[bytes, ManifestHead]:
    """The report page of the published snapshot in `directory` (`name`: how messages call it),
    compared with the snapshot `before` (file system, directory, name) when given; and the
    snapshot's manifest. A directory without a manifest (an unfinished run) is a
    SnapshotError, as is any part that does not match its entry. The manifest's entries are
    streamed, never held."""
    manifest = read_head(fs, directory, name)
    data = report_frames(fs, directory, manifest, name, min_cell)
    earlier = None
    if before is not None:
        other_fs, other_dir, other_name = before
        other = read_head(other_fs, other_dir, other_name)
        earlier = report_frames(other_fs, other_dir, other, other_name, min_cell)
    page, _ = report_page(data, min_cell, before=earlier)
    return page, manifest


@dataclass(frozen=True)
class ReportWritten:
    """The run's manifest listing its report, and the report's headline figures as printed
    (counts, or "fewer than N learners": nothing personal) for the run's artifact."""

    manifest: ManifestHead
    headline: list[tuple[str, str]]


def write_report(destination: Destination, manifest: ManifestHead) -> ReportWritten:
    """Write the analyst report of the unpublished run `manifest` describes (its manifest
    written, its parts not yet published) as `report.html` in its directory, then its manifest
    again, listing the report. Safe to repeat: the same tables give the same page."""
    run_dir = destination.incomplete_dir(manifest.run_id)
    data = report_frames(destination.fs, run_dir, manifest, manifest.run_id)
    page, headline = report_page(data)
    stored = write_file(destination.fs, posixpath.join(run_dir, REPORT_NAME), page)
    entry = StoredEntry(path=REPORT_NAME, bytes=stored.bytes, sha256=stored.sha256)
    listed = manifest.model_copy(update={"report": entry})
    rewrite_manifest(destination, listed)
    return ReportWritten(listed, headline)


def headline_markdown(headline: list[tuple[str, str]], location: str) -> str:
    """The Markdown of the run's report artifact: the headline figures and where the page is."""
    lines = ["# Analyst report", "", f"The report: `{location}`", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in headline]
    return "\n".join(lines) + "\n"
