"""One chunk of an archive run: extract its learners in one snapshot, build and store their
documents (and the Parquet side outputs), then record the chunk as finished.

Plain functions, free of Prefect, so they are tested by calling them; `flows.archive` wraps
`archive_chunk` in a task. They return ids, paths and hashes, never a document.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet
from sqlalchemy.engine import Connection

from extract.engine import create_source_engine, snapshot
from extract.errors import TerminalExtractError
from extract.ordered_pass import OrderedPass
from extract.reader import iter_learners, read_learner
from extract.records import LearnerRows
from flows.errors import error_text
from flows.interrupt import check_not_stopping
from load.codec import Compression, encode_stored, fernet_from_key, stored_suffix
from load.destination import Destination, FileBatch, open_destination, write_file
from load.errors import TransientLoadError
from load.manifest import (
    ChunkPart,
    Failure,
    FileEntry,
    NulledValue,
    StoredEntry,
    part_path,
)
from load.manifest import to_json as record_json
from load.names import document_filename, page_filename
from transform.document import LESSON_CAP, build_document
from transform.encoding import encode_document
from transform.notice import Exclusion, OperatorNotice
from transform.page_html import page_for

if TYPE_CHECKING:
    from flows.analyst import ChunkTables


@dataclass(frozen=True)
class ChunkJob:
    """Everything a chunk needs, the same for every chunk of a run.

    Holds the source URL and keys, so it is handed to tasks (in process, or pickled to a Dask
    worker) and never becomes a flow parameter, a result or a log line.
    """

    destination_url: str
    run_id: str
    source_url: str
    export_date: datetime
    exported_by: int | None
    compress: Compression | None
    encryption_key: str | None
    parquet: bool
    pseudonym_key: str | None
    html: bool = False
    """`archive --html`: each learner's readable page beside its document."""
    notice: OperatorNotice | None = None
    """The operator's part of the pages' notice (None: nothing configured)."""
    left_out: tuple[Exclusion, ...] = ()
    """What the documents leave out, for the pages' notice (the coverage registry)."""
    missing_indexes: tuple[str, ...] = ()
    """The needed indexes the source lacks (`table.column`, `extract.indexes`), as found when the
    run's chunks start: when there are any, the chunks are read in ordered passes
    (`flows.passes`), not each by index."""

    def __repr__(self) -> str:  # never print the URL (password) or the keys
        return f"ChunkJob(run_id={self.run_id!r})"

    def fernet(self) -> Fernet | None:
        """The Fernet that encrypts this run's documents, or None when they are stored plain."""
        return fernet_from_key(self.encryption_key) if self.encryption_key else None


def archive_chunk(
    job: ChunkJob, index: int, learner_ids: list[int], *, source: OrderedPass | None = None
) -> ChunkPart:
    """Export chunk `index` (these learner ids) into the run's incomplete directory.

    The rows are read by index in a snapshot of the chunk's own, or, with `source`, from an
    ordered pass over the tables (`flows.passes`), in the pass's snapshot.

    Learners are streamed from the source (one snapshot for the chunk) and each document is
    built and stored as soon as its rows are in, so the database keeps sending while documents
    are built; with Parquet, the learner's rows go into the analyst tables' row groups as well,
    and the optional source tables are read after the learners, in the same snapshot. Every
    document and Parquet file is complete before the chunk's part record is written, so a part on
    disk means a finished chunk; rerunning a chunk overwrites its files by name (the same names),
    so an interrupted chunk leaves no duplicates. Transient errors propagate (the task retries
    the chunk); a learner that cannot be exported is listed in `failures`, and when the source
    cannot be read at all, every learner of the chunk is.
    """
    started = time.perf_counter()
    destination = open_destination(job.destination_url)
    run_dir = destination.incomplete_dir(job.run_id)
    fernet = job.fernet()
    files: list[FileEntry] = []
    failures: list[Failure] = []
    found_ids: list[int] = []
    tables = _chunk_tables(job, destination, run_dir, index)
    # The chunk's documents are made durable together, before its part record says they exist.
    batch = FileBatch(destination.fs, run_dir)
    try:
        try:
            lesson_limit = None if tables else LESSON_CAP  # Parquet keeps every lesson
            with _reading(job, source, lesson_limit) as (conn, read):
                with closing(read(learner_ids)) as rows:
                    for learner in rows:
                        check_not_stopping(index)  # Ctrl-C: give up the chunk, not finish it
                        found_ids.append(learner.learner_id)
                        if tables:
                            tables.add(learner)
                        try:
                            files.append(_store_document(job, batch, learner, fernet))
                        except TransientLoadError:
                            raise
                        except Exception as exc:
                            failures.append(
                                Failure(
                                    learner_id=learner.learner_id,
                                    chunk=index,
                                    error=error_text(exc),
                                )
                            )
                if tables and found_ids:
                    tables.add_optional(conn, found_ids)
        except TerminalExtractError as exc:
            batch.abort()
            unread = [Failure(learner_id=i, chunk=index, error=str(exc)) for i in learner_ids]
            part = ChunkPart(
                index=index, learner_ids=learner_ids, files=[], failures=unread, seconds=0
            )
            return _finish(destination, run_dir, part, started)
        batch.commit()
        parquet = tables.close() if tables and found_ids else []
    finally:
        batch.abort()
        if tables:
            tables.abort()
    part = ChunkPart(
        index=index,
        learner_ids=learner_ids,
        files=files,
        parquet=parquet,
        parquet_skipped=tables.skipped if tables and found_ids else [],
        pseudonym_key_fingerprint=tables.fingerprint if tables and found_ids else None,
        not_found=sorted(set(learner_ids) - set(found_ids)),
        failures=failures,
        seconds=0,
    )
    return _finish(destination, run_dir, part, started)


def export_one(job: ChunkJob, learner_id: int) -> FileEntry:
    """One learner's document, written straight into the destination directory (no snapshot).
    Raises LearnerNotFound when the id is not a LEARNER user."""
    destination = open_destination(job.destination_url)
    engine = create_source_engine(job.source_url)
    try:
        with snapshot(engine) as conn:
            rows = read_learner(conn, learner_id, lesson_limit=LESSON_CAP)
    finally:
        engine.dispose()
    fernet = job.fernet()
    batch = FileBatch(destination.fs, destination.root)
    try:
        entry = _store_document(job, batch, rows, fernet)
        batch.commit()
    finally:
        batch.abort()
    return entry


LearnerReader = Callable[[Collection[int]], Generator[LearnerRows, None, None]]
"""Reads the rows of a chunk's learners, one learner at a time in ascending id order."""


@contextmanager
def _reading(
    job: ChunkJob, source: OrderedPass | None, lesson_limit: int | None
) -> Iterator[tuple[Connection, LearnerReader]]:
    """Where a chunk's rows come from: its own snapshot, read by index, or the ordered pass
    `source` (opened with the same lesson limit), whose driver errors are reported as a
    snapshot's are."""
    if source is not None:
        if source.lesson_limit != lesson_limit:
            raise ValueError("the ordered pass reads another number of lessons per learner")
        with source.translated():
            yield source.conn, source.learners
        return
    with source_snapshot(job) as conn:
        yield conn, lambda ids: iter_learners(conn, ids, lesson_limit=lesson_limit)


@contextmanager
def source_snapshot(job: ChunkJob) -> Iterator[Connection]:
    """One read-only snapshot of the source, for one chunk."""
    engine = create_source_engine(job.source_url)
    try:
        with snapshot(engine) as conn:
            yield conn
    finally:
        engine.dispose()


def _chunk_tables(
    job: ChunkJob, destination: Destination, run_dir: str, index: int
) -> ChunkTables | None:
    """The chunk's analyst tables, or None when the run writes documents only."""
    if not job.parquet:
        return None
    # Imported here: only runs that ask for the side outputs need pyarrow loaded (the one-off
    # export imports this module and starts fast).
    from flows.analyst import ChunkTables
    from transform.tables import RunStamp

    key = (job.pseudonym_key or "").encode()
    return ChunkTables(destination, run_dir, index, key, RunStamp(job.run_id, job.export_date))


def _store_document(
    job: ChunkJob, batch: FileBatch, rows: LearnerRows, fernet: Fernet | None
) -> FileEntry:
    """Build, encode and store one document in the batch's directory; `path` is its bare name."""
    built = build_document(rows, export_date=job.export_date, exported_by=job.exported_by)
    plain = encode_document(built.document)
    data = encode_stored(plain, job.compress, fernet)
    suffix = stored_suffix(job.compress, encrypted=fernet is not None)
    name = document_filename(rows.learner_id, job.export_date, suffix=suffix)
    stored = batch.write(name, data)
    page = None
    if job.html:  # rendered from the document's own bytes; stored (and encrypted) as it is
        page_name = page_filename(rows.learner_id, job.export_date) + suffix
        html = page_for(built.document, job.notice or OperatorNotice(), job.left_out)
        written = batch.write(page_name, encode_stored(html, job.compress, fernet))
        page = StoredEntry(path=page_name, bytes=written.bytes, sha256=written.sha256)
    return FileEntry(
        path=name,
        learner_id=rows.learner_id,
        bytes=stored.bytes,
        sha256=stored.sha256,
        lessons_exported=built.lessons_exported,
        lessons_total=built.lessons_total,
        truncated=built.truncated,
        problems=[
            NulledValue(table=p.table, column=p.column, row_id=p.row_id, kind=p.kind)
            for p in built.problems
        ],
        page=page,
    )


def _finish(destination: Destination, run_dir: str, part: ChunkPart, started: float) -> ChunkPart:
    """Record the chunk as finished: its part is written only after all of its files."""
    part = part.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})
    write_file(destination.fs, posixpath.join(run_dir, part_path(part.index)), record_json(part))
    return part
