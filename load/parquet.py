"""Parquet parts of the analyst tables, written one chunk at a time to any fsspec file system.

Layout (the flows build it): `<dest>/<run_id>/parquet/<table>/part-<chunk:05d>.parquet`, one part
per table per chunk, empty parts included, so every snapshot of every table reads with its
schema. A part is encoded in memory (zstd) and then written under a hidden temporary name in its
directory and moved into place, so a reader never sees a partial file under a final name: on a
local disk that is `load.files.write_atomic` (fsync, rename, owner-only mode); elsewhere the
temporary object is moved (object stores only show an upload once it is complete). Nothing is
kept between calls: memory is bounded by one chunk's table and its encoded bytes.
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from load.errors import TerminalLoadError, os_error
from load.files import write_atomic

PARQUET_DIRECTORY = "parquet"
"""The directory of a run that holds one directory per analyst table."""

COMPRESSION = "zstd"


def part_name(chunk: int) -> str:
    """The file name of a chunk's part: `part-00042.parquet` (sorted names are chunk order)."""
    return f"part-{chunk:05d}.parquet"


@dataclass(frozen=True, slots=True)
class ParquetPart:
    """A complete Parquet file at `path` (as the caller named it): `rows` rows, `bytes` bytes
    whose sha256 is `sha256` (hex)."""

    path: str
    rows: int
    bytes: int
    sha256: str


def write_parquet_part(
    fs: fsspec.AbstractFileSystem, directory: str, name: str, table: pa.Table
) -> ParquetPart:
    """Write `table` as one zstd-compressed Parquet file `directory/name`, atomically.

    The file's schema is the table's (so a table built with a declared schema is written with
    it, metadata included). An existing file of that name is replaced (a retried chunk). On error
    no file appears under `name`, and a `LoadError` names the path.
    """
    data = _encoded(table)
    path = f"{directory.rstrip('/')}/{name}"
    if isinstance(fs, LocalFileSystem):
        write_atomic(Path(fs._strip_protocol(directory)), name, data)
    else:
        _write_via_move(fs, directory.rstrip("/"), name, data)
    return ParquetPart(
        path=path, rows=table.num_rows, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )


def read_parquet_rows(fs: fsspec.AbstractFileSystem, path: str) -> int:
    """The number of rows of the Parquet file at `path`, read from its footer alone.

    A missing, truncated or non-Parquet file is a `TerminalLoadError` naming the path.
    """
    try:
        with fs.open(path, "rb") as handle:
            rows: int = pq.ParquetFile(handle).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise TerminalLoadError(
            f"reading the Parquet footer of {path} failed ({type(exc).__name__})"
        ) from None
    return rows


def _encoded(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION)
    encoded: bytes = sink.getvalue().to_pybytes()
    return encoded


def _write_via_move(fs: fsspec.AbstractFileSystem, directory: str, name: str, data: bytes) -> None:
    # A leading dot: pyarrow.dataset skips such files, and `*.parquet` globs never match `.tmp`.
    temporary = f"{directory}/.{name}.{secrets.token_hex(6)}.tmp"
    target = f"{directory}/{name}"
    try:
        fs.makedirs(directory, exist_ok=True)
        try:
            fs.pipe_file(temporary, data)
            fs.mv(temporary, target)
        except BaseException:
            with suppress(OSError):
                fs.rm(temporary)
            raise
    except OSError as exc:
        raise os_error(exc, f"writing {target}") from None
