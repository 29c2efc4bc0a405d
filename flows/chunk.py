"""One chunk of an archive run: extract its learners in one snapshot, build and store their
documents (and the Parquet side outputs), then record the chunk as finished.

Plain functions, free of Prefect, so they are tested by calling them; `flows.archive` wraps
`archive_chunk` in a task. They return ids, paths and hashes, never a document.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Generator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import Fernet

from extract.engine import create_source_engine, snapshot
from extract.errors import TerminalExtractError
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
    ParquetPartEntry,
    parquet_part_path,
    part_path,
)
from load.manifest import to_json as record_json
from load.names import document_filename
from transform.document import LESSON_CAP, build_document
from transform.encoding import encode_document


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

    def __repr__(self) -> str:  # never print the URL (password) or the keys
        return f"ChunkJob(run_id={self.run_id!r})"

    def fernet(self) -> Fernet | None:
        """The Fernet that encrypts this run's documents, or None when they are stored plain."""
        return fernet_from_key(self.encryption_key) if self.encryption_key else None


def archive_chunk(job: ChunkJob, index: int, learner_ids: list[int]) -> ChunkPart:
    """Export chunk `index` (these learner ids) into the run's incomplete directory.

    Learners are streamed from the source (one snapshot for the chunk) and each document is
    built and stored as soon as its rows are in, so the database keeps sending while documents
    are built. Every document and Parquet file is complete before the chunk's part record is
    written, so a part on disk means a finished chunk; rerunning a chunk overwrites its files by
    name (the same names), so an interrupted chunk leaves no duplicates. Transient errors
    propagate (the task retries the chunk); a learner that cannot be exported is listed in
    `failures`, and when the source cannot be read at all, every learner of the chunk is.
    """
    started = time.perf_counter()
    destination = open_destination(job.destination_url)
    run_dir = destination.incomplete_dir(job.run_id)
    fernet = job.fernet()
    files: list[FileEntry] = []
    failures: list[Failure] = []
    found: dict[int, LearnerRows] = {}  # every learner's rows, kept only for the Parquet tables
    found_ids: list[int] = []
    # The chunk's documents are made durable together, before its part record says they exist.
    batch = FileBatch(destination.fs, run_dir)
    try:
        try:
            with closing(_extract(job, learner_ids)) as learners:
                for rows in learners:
                    check_not_stopping(index)  # Ctrl-C: give up the chunk, not finish it
                    found_ids.append(rows.learner_id)
                    if job.parquet:
                        found[rows.learner_id] = rows
                    try:
                        files.append(_store_document(job, batch, rows, fernet))
                    except TransientLoadError:
                        raise
                    except Exception as exc:
                        failures.append(
                            Failure(learner_id=rows.learner_id, chunk=index, error=error_text(exc))
                        )
        except TerminalExtractError as exc:
            batch.abort()
            unread = [Failure(learner_id=i, chunk=index, error=str(exc)) for i in learner_ids]
            part = ChunkPart(
                index=index, learner_ids=learner_ids, files=[], failures=unread, seconds=0
            )
            return _finish(destination, run_dir, part, started)
        batch.commit()
    finally:
        batch.abort()
    parquet = (
        write_analyst_tables(job, destination, run_dir, index, found)
        if job.parquet and found
        else []
    )
    part = ChunkPart(
        index=index,
        learner_ids=learner_ids,
        files=files,
        parquet=parquet,
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


def _extract(job: ChunkJob, learner_ids: list[int]) -> Generator[LearnerRows, None, None]:
    """The chunk's learners as they are read, in one snapshot; close it to end the snapshot."""
    # Parquet keeps every lesson; documents alone need only the most recent LESSON_CAP.
    lesson_limit = None if job.parquet else LESSON_CAP
    engine = create_source_engine(job.source_url)
    try:
        with (
            snapshot(engine) as conn,
            closing(iter_learners(conn, learner_ids, lesson_limit=lesson_limit)) as learners,
        ):
            yield from learners
    finally:
        engine.dispose()


def _store_document(
    job: ChunkJob, batch: FileBatch, rows: LearnerRows, fernet: Fernet | None
) -> FileEntry:
    """Build, encode and store one document in the batch's directory; `path` is its bare name."""
    built = build_document(rows, export_date=job.export_date, exported_by=job.exported_by)
    data = encode_stored(encode_document(built.document), job.compress, fernet)
    suffix = stored_suffix(job.compress, encrypted=fernet is not None)
    name = document_filename(rows.learner_id, job.export_date, suffix=suffix)
    stored = batch.write(name, data)
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
    )


def write_analyst_tables(
    job: ChunkJob,
    destination: Destination,
    run_dir: str,
    index: int,
    rows: Mapping[int, LearnerRows],
) -> list[ParquetPartEntry]:
    """The chunk's Parquet side outputs: one part per analyst table, at
    `parquet/<table>/part-<index:05d>.parquet`, every lesson included."""
    # Imported here: only runs that ask for the side outputs need pyarrow loaded.
    from load.parquet import write_parquet_part
    from transform.tables import analyst_tables

    key = (job.pseudonym_key or "").encode()
    tables = analyst_tables([rows[i] for i in sorted(rows)], pseudonym_key=key)
    entries = []
    for table_name in sorted(tables):
        relative = parquet_part_path(table_name, index)
        part = write_parquet_part(
            destination.fs,
            posixpath.join(run_dir, posixpath.dirname(relative)),
            posixpath.basename(relative),
            tables[table_name],
        )
        entries.append(
            ParquetPartEntry(
                table=table_name,
                path=relative,
                rows=int(part.rows),
                bytes=int(part.bytes),
                sha256=str(part.sha256),
            )
        )
    return entries


def _finish(destination: Destination, run_dir: str, part: ChunkPart, started: float) -> ChunkPart:
    """Record the chunk as finished: its part is written only after all of its files."""
    part = part.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})
    write_file(destination.fs, posixpath.join(run_dir, part_path(part.index)), record_json(part))
    return part
