"""The analyst tables of a run: a chunk's Parquet parts streamed as its rows arrive, and the
snapshot's data dictionary.

Plain functions and classes, free of Prefect, composing extract's rows, transform's tables and
load's Parquet writer. A chunk's parts are written a row group at a time (`ROW_GROUP_ROWS` rows
of one table), so memory is bounded by a row group per table, never by the chunk.
"""

from __future__ import annotations

import importlib.abc
import os
import posixpath
import sys
import threading
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from importlib.machinery import ModuleSpec
from types import ModuleType

import orjson
import pyarrow as pa
from sqlalchemy.engine import Connection

from extract.arrow_read import ArrowSession
from extract.queries import POSTGRESQL
from extract.reader import iter_optional_batches, optional_tables_present
from extract.records import LearnerRows
from load.destination import Destination, write_file
from load.manifest import ManifestHead, ParquetPartEntry, StoredEntry, parquet_part_path
from load.parquet import IN_PROGRESS_SUFFIX, ParquetPartWriter, promote_parts
from transform.analyst_schema import (
    DICTIONARY_NAME,
    LEARNER_TABLES,
    SOURCE_TABLES,
    TABLE_SCHEMAS,
    data_dictionary,
)
from transform.pseudonyms import key_fingerprint
from transform.source_tables import SourceTableRows
from transform.tables import LearnerTableRows, RunStamp

ROW_GROUP_ROWS = 5_000
"""Rows of one table held before they are written as a row group: a few MB of Python objects per
table (20,000 held ~340 MB more over two chunk threads of the bench), and row groups still large
enough to read fast."""


BATCH_ROWS = 1_000
"""Rows of an optional source table read and converted together (column by column)."""


def use_system_allocator() -> None:
    """Send pyarrow's own allocations to the system allocator (malloc) from now on, in a process
    that imported pyarrow before `flows` could choose its default (`flows/__init__.py`; nothing
    changes where it did, nor where the operator chose a pool). Arrow's C++ internals keep the
    pool they started with, and buffers already allocated are freed to the pool they came from."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system") != "system":
        return
    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())


class _NoPandasNow(importlib.abc.MetaPathFinder):
    """A finder that says pandas is not installed, for as long as it is on `sys.meta_path`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "pandas":
            raise ModuleNotFoundError("pandas is kept out of pyarrow here", name="pandas")
        return None


_PANDAS_DECIDED = threading.Lock()
_pandas_kept_out = False


def keep_pandas_out_of_pyarrow() -> None:
    """Keep pyarrow from importing pandas in this process: ~30 MB of RSS that the chunks, which
    never hand pyarrow a pandas object, pay for nothing.

    pyarrow looks for pandas twice, each the first time it is needed and then never again: its
    Python shim when `pa.array` is given anything but a numpy array (is it a pandas object?), and
    its C++ converter when it infers a type (pandas' `NA` and `NaT` as nulls). One untyped
    `pa.array` with pandas made unimportable here settles both. pyarrow's pandas APIs
    (`Table.to_pandas`, `Table.from_pandas`, a Series to `pa.array`: the report's) import pandas
    when called and give the same results. What is given up: `from_pandas=True` no longer takes
    `pd.NA` or `pd.NaT` inside a plain Python list for a null, which nothing here asks of it.
    Nothing changes in a process that has imported pandas already. Depends on pyarrow's
    internals: `tests/flows/test_arrow_pool.py` checks each of these in fresh interpreters, and a
    whole chunk with Parquet on both databases, so a pyarrow that changes them fails there."""
    global _pandas_kept_out
    if _pandas_kept_out or "pandas" in sys.modules:
        return
    with _PANDAS_DECIDED:  # chunk threads start together; one of them decides
        if _pandas_kept_out:
            return
        finder = _NoPandasNow()
        sys.meta_path.insert(0, finder)
        try:
            pa.array([0])  # untyped: the shim's try and the C++ converter's, once each
        finally:
            sys.meta_path.remove(finder)
        _pandas_kept_out = True


class ChunkTables:
    """The Parquet parts of one chunk, at `parquet/<table>/part-<index:05d>.parquet.inprogress`
    under `run_dir` (the manifest lists them without the suffix, which `publish_parts` drops).
    Add learners (`add`), then the optional tables (`add_optional`), then `close`; or `abort`,
    which leaves no part under its name."""

    def __init__(
        self, destination: Destination, run_dir: str, index: int, key: bytes, run: RunStamp
    ) -> None:
        use_system_allocator()
        keep_pandas_out_of_pyarrow()
        self.run = run
        self.fingerprint = key_fingerprint(key)
        self.skipped: list[str] = []
        self._learners = LearnerTableRows(key)
        self._sources = {name: SourceTableRows(name, key) for name in SOURCE_TABLES}
        self._writers: dict[str, ParquetPartWriter] = {}
        self._destination = destination
        self._run_dir = run_dir
        self._index = index

    def add(self, learner: LearnerRows) -> None:
        """Add one learner's rows to the tables built from the four source tables."""
        self._learners.add(learner)
        for name in LEARNER_TABLES:
            if self._learners.pending(name) >= ROW_GROUP_ROWS:
                self._writer(name).write(self._learners.take_table(name, self.run))

    def add_optional(self, conn: Connection, learner_ids: Iterable[int]) -> None:
        """Stream the optional source tables' rows of these learners into their tables; a table
        the source lacks is skipped and listed in `skipped`."""
        present = optional_tables_present(conn)
        ids = list(learner_ids)
        with ExitStack() as stack:
            arrow = None
            if conn.dialect.name == POSTGRESQL:
                arrow = stack.enter_context(ArrowSession(conn))
            for name, source in SOURCE_TABLES.items():
                if not present[source]:
                    self.skipped.append(name)
                    continue
                rows = self._sources[name]
                batches = arrow.batches(source, ids) if arrow is not None else None
                if batches is not None and rows.accepts(batches.schema):
                    for batch in batches:
                        rows.add_arrow(batch)
                        self._write_full(name, rows)
                    continue
                if batches is not None:  # columns of other types: psycopg reads them
                    batches.close()
                for names, batch in iter_optional_batches(conn, source, ids, size=BATCH_ROWS):
                    rows.add_batch(names, batch)
                    self._write_full(name, rows)

    def _write_full(self, name: str, rows: SourceTableRows) -> None:
        """Write the rows of `name` as a row group once there are enough of them."""
        if rows.pending >= ROW_GROUP_ROWS:
            self._writer(name).write(rows.take(self.run))

    def close(self) -> list[ParquetPartEntry]:
        """Write what is left and move every part into place; their manifest entries."""
        for name in LEARNER_TABLES:
            self._writer(name).write(self._learners.take_table(name, self.run))
        for name, rows in self._sources.items():
            if name not in self.skipped:
                self._writer(name).write(rows.take(self.run))
        entries = []
        for name in sorted(self._writers):
            part = self._writers[name].close()
            entries.append(
                ParquetPartEntry(
                    table=name,
                    path=parquet_part_path(name, self._index),
                    rows=part.rows,
                    bytes=part.bytes,
                    sha256=part.sha256,
                )
            )
        self._writers.clear()
        return entries

    def abort(self) -> None:
        """Remove every part begun (none appears under its name)."""
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()

    def _writer(self, name: str) -> ParquetPartWriter:
        if name not in self._writers:
            relative = parquet_part_path(name, self._index)
            # Named `*.parquet.inprogress` until the run is published (`publish_parts`).
            self._writers[name] = ParquetPartWriter(
                self._destination.fs,
                posixpath.join(self._run_dir, posixpath.dirname(relative)),
                posixpath.basename(relative) + IN_PROGRESS_SUFFIX,
                TABLE_SCHEMAS[name],
            )
        return self._writers[name]


def write_dictionary(
    destination: Destination, run_dir: str, manifest: ManifestHead
) -> ManifestHead:
    """Write the data dictionary `schema.json` into the run directory; the manifest listing it."""
    dictionary = data_dictionary(
        run_id=manifest.run_id,
        pseudonym_key_fingerprint=manifest.pseudonym_key_fingerprint,
        skipped=manifest.parquet_skipped,
    )
    data = orjson.dumps(dictionary, option=orjson.OPT_INDENT_2) + b"\n"
    stored = write_file(destination.fs, posixpath.join(run_dir, DICTIONARY_NAME), data)
    entry = StoredEntry(path=DICTIONARY_NAME, bytes=stored.bytes, sha256=stored.sha256)
    return manifest.model_copy(update={"dictionary": entry})


def publish_parts(destination: Destination, run_dir: str, manifest: ManifestHead) -> None:
    """Give the run's Parquet parts their `.parquet` names, just before the run is published (a
    glob over the destination matches no part of a run in progress)."""
    paths = [part.path for table in manifest.parquet.values() for part in table.parts]
    promote_parts(destination.fs, run_dir, paths)
