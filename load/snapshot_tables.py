"""A snapshot's analyst tables read back for the report: each Parquet part the manifest lists,
checked against its entry before it is used.

A part is read whole (one part is one chunk of one table: a few MB), its size and sha256 checked
on the very bytes that are then parsed (`load.snapshot_files.bytes_problem`, the check `verify`
makes), so what the report shows is what the manifest vouches for, on a local path or any fsspec
URL. Only the columns asked for are kept, so memory holds the columns the report reads, not the
tables. A part still named `.parquet.inprogress` (a run between its manifest and its
publication, when `archive --report` writes its report) is read under that name.
"""

from __future__ import annotations

import posixpath

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from load.destination import read_if_exists
from load.manifest import ManifestHead, ParquetPartEntry
from load.parquet import IN_PROGRESS_SUFFIX
from load.snapshot_files import MISSING, SnapshotError, bytes_problem


class TablesUnavailable(SnapshotError):
    """The snapshot has no analyst tables to read (archived with --no-parquet)."""


def read_table(
    fs: fsspec.AbstractFileSystem,
    directory: str,
    manifest: ManifestHead,
    table: str,
    columns: list[str],
    schema: pa.Schema,
    *,
    dictionary: tuple[str, ...] = (),
    where: tuple[str, list[str]] | None = None,
) -> pa.Table | None:
    """`columns` of `table`, every part the manifest lists in part order, each checked against
    its entry; None when the run wrote no such table (its optional source table was missing).

    Raises SnapshotError naming the part when one is missing, differs from its entry or is not
    Parquet: a report is never built from files the manifest does not vouch for. `schema` (the
    declared one) types the result even when every part is empty. The string columns named in
    `dictionary` are read dictionary-encoded (a value repeated over millions of rows, such as a
    learner's pseudonym, is then held once per part, not once per row). `where` (a column
    and values) keeps only the rows whose column holds one of the values.
    """
    if not manifest.parquet:
        raise TablesUnavailable(
            "the snapshot has no analyst tables (it was archived with --no-parquet)"
        )
    listed = manifest.parquet.get(table)
    if listed is None:
        return None
    wanted = pa.schema([_field(schema.field(name), name in dictionary) for name in columns])
    pieces = [
        _part(fs, directory, part, columns, dictionary, where).cast(wanted) for part in listed.parts
    ]
    return pa.concat_tables(pieces) if pieces else wanted.empty_table()


def _field(field: pa.Field, encoded: bool) -> pa.Field:
    return field.with_type(pa.dictionary(pa.int32(), field.type)) if encoded else field


def _part(
    fs: fsspec.AbstractFileSystem,
    directory: str,
    part: ParquetPartEntry,
    columns: list[str],
    dictionary: tuple[str, ...],
    where: tuple[str, list[str]] | None,
) -> pa.Table:
    full = posixpath.join(directory, part.path)
    data = read_if_exists(fs, full)
    if data is None:
        data = read_if_exists(fs, full + IN_PROGRESS_SUFFIX)
    if data is None:
        raise SnapshotError(f"{part.path}: {MISSING}")
    if problem := bytes_problem(data, part.bytes, part.sha256):
        raise SnapshotError(f"{part.path}: {problem}")
    try:
        return pq.read_table(
            pa.BufferReader(data),
            columns=columns,
            read_dictionary=[name for name in columns if name in dictionary],
            filters=None if where is None else [(where[0], "in", where[1])],
        )
    except (pa.ArrowException, OSError):
        raise SnapshotError(f"{part.path}: not a readable Parquet file") from None
