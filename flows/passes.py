"""How an archive run reads its chunks: each by index, or, on a source without the needed
indexes, in a few ordered passes that each read a run of consecutive chunks.

Without an index on `lessons.learner_id` (or the other two of `extract.indexes`), a chunk's
`learner_id IN (...)` statement scans the whole table, and a run of C chunks scans it C times: a
cost that grows with the square of the platform. There the pending chunks are cut into at most
as many consecutive runs as the run has workers, and each run is one task, `archive_pass`: one
snapshot, one ordered scan of each table over the run's id range (`extract.ordered_pass`), each
chunk written and recorded as before. The tables are then read once per worker, whatever the
number of chunks.

What stays as with chunk tasks:
- every chunk is written by `flows.chunk.archive_chunk` and records its part when its files are
  durable: resuming skips finished chunks, however they were read;
- a pass that is rerun (a retry after a transient error, a Dask worker lost) skips the chunks
  of its run that have a part without failures, and reads only the rest;
- every chunk reads in one snapshot (its pass's), and the documents are byte-identical to
  those read by index.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from extract.ordered_pass import OrderedPass
from flows.chunk import ChunkJob, archive_chunk, source_snapshot
from load.destination import list_files, open_destination, read_if_exists
from load.manifest import PARTS_DIR, ChunkPart, ChunkTally, part_path
from transform.document import LESSON_CAP

BY_INDEX = "read by index"
ONE_CHUNK = "one chunk: one statement per table (as a pass would be; indexes not checked)"
"""How a run reads a single pending chunk: its `IN` statements scan each table at most once,
as an ordered pass would, so the source's catalog is not even asked."""


def read_way(missing_indexes: Sequence[str] | None) -> str:
    """How a run reads its chunks, for its summary, given the needed indexes its source lacks
    (None: the catalog could not be read, and the chunks are read by index)."""
    if missing_indexes is None:
        return f"{BY_INDEX} (the source's indexes could not be checked)"
    if not missing_indexes:
        return BY_INDEX
    return f"one ordered pass per table: index missing on {', '.join(missing_indexes)}"


def passes_of(pending: Sequence[int], count: int) -> list[list[int]]:
    """The pending chunk indexes (ascending) cut into at most `count` runs of consecutive
    chunks, as even as can be: each run is one ordered pass."""
    count = max(1, min(count, len(pending)))
    size, extra = divmod(len(pending), count)
    runs, start = [], 0
    for number in range(count):
        end = start + size + (1 if number < extra else 0)
        runs.append(list(pending[start:end]))
        start = end
    return [run for run in runs if run]


def pass_count(task_runner: Any, default: int) -> int:
    """How many passes run at once on `task_runner`: a thread pool's workers, a Dask cluster's
    threads; `default` when the runner does not say."""
    workers = getattr(task_runner, "_max_workers", None)  # ThreadPoolTaskRunner
    if isinstance(workers, int) and 0 < workers < 1_000:
        return workers
    try:  # prefect_dask's DaskTaskRunner, once started
        threads = sum(task_runner.client.nthreads().values())
    except Exception:
        return default
    return threads if isinstance(threads, int) and threads > 0 else default


def archive_pass(job: ChunkJob, chunks: dict[int, list[int]]) -> list[ChunkTally]:
    """Export these chunks (index -> learner ids; consecutive, ascending) in one ordered pass;
    the tally of each, in order, those finished by an earlier attempt of the pass included. Only
    the pass's own chunks travel with it (a plan of millions of ids stays with the flow), and
    only their tallies come back (their entries stay in their part records)."""
    destination = open_destination(job.destination_url)
    run_dir = destination.incomplete_dir(job.run_id)
    indexes = sorted(chunks)
    parts = _finished(destination.fs, run_dir, indexes)
    todo = [index for index in indexes if index not in parts]
    if todo:
        ids = [learner for index in todo for learner in chunks[index]]
        lesson_limit = None if job.parquet else LESSON_CAP  # as archive_chunk reads
        with (
            source_snapshot(job) as conn,
            OrderedPass(conn, ids, lesson_limit=lesson_limit) as source,
        ):
            for index in todo:
                parts[index] = archive_chunk(job, index, chunks[index], source=source).tally()
    return [parts[index] for index in indexes]


def failed_pass(
    job: ChunkJob, indexes: list[int], error: str
) -> tuple[dict[int, ChunkTally], dict[int, str]]:
    """A pass that raised (after its retries): the tallies of the parts its chunks recorded
    before it did, and `error` for each of the others, as failed chunk tasks are reported."""
    destination = open_destination(job.destination_url)
    try:
        parts = _finished(destination.fs, destination.incomplete_dir(job.run_id), indexes)
    except Exception:  # the destination cannot say: every chunk of the pass is done again
        parts = {}
    return parts, {index: error for index in indexes if index not in parts}


def _finished(fs: Any, run_dir: str, indexes: list[int]) -> dict[int, ChunkTally]:
    """The tallies of these chunks' parts already recorded without failures (a chunk with
    failures is done again, as a resumed run does). One listing of the parts directory, then a
    read of each part of this pass that is there."""
    present = set(list_files(fs, posixpath.join(run_dir, PARTS_DIR)))
    parts = {}
    for index in indexes:
        path = part_path(index)
        if posixpath.relpath(path, PARTS_DIR) not in present:
            continue
        data = read_if_exists(fs, posixpath.join(run_dir, path))
        if data is None:
            continue
        part = ChunkPart.model_validate_json(data)
        if not part.failures:
            parts[index] = part.tally()
    return parts
