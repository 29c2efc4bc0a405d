"""A published snapshot read back: its manifest, and each listed file checked against its entry.

`verify` and `restore` both read snapshots through here, on a local path or any fsspec URL:

    SNAPSHOT/manifest.json   a `load.manifest.Manifest` (read with the model itself)
    SNAPSHOT/<entry.path>    each file the manifest lists, `bytes` long, with that `sha256`

`bytes` and `sha256` describe a file exactly as stored (after compression and encryption). A
manifest that cannot be trusted as a whole (missing, not valid JSON, not a manifest, a path
leaving the snapshot, a learner listed twice) is a `SnapshotError` when it is read whole
(`read_manifest`); read in bounded memory, its head is (`read_head`) and its entries raise a
`load.manifest.ManifestError` as they are reached (`read_entries`), so a reader that must not
use any of an untrusted manifest reads the entries once before it uses them. A file that does
not match its entry is reported per file (`file_problem`), so the other files can still be used.
Messages name paths, ids and checks, never content.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Iterator

import fsspec
from pydantic import ValidationError

from load.destination import list_files, read_if_exists, translated
from load.errors import TerminalLoadError
from load.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    ManifestHead,
    entry_paths,
    manifest_entries,
    manifest_head,
)

_HASH_STEP = 1024 * 1024
MISSING = "is missing from the snapshot"


class SnapshotError(TerminalLoadError):
    """The snapshot's manifest is missing or cannot be trusted; nothing of it is used."""


class SnapshotNotFound(SnapshotError):
    """There is no snapshot directory at all (a wrong path, not a damaged snapshot)."""


def read_manifest(fs: fsspec.AbstractFileSystem, directory: str, name: str) -> Manifest:
    """The manifest of the snapshot in `directory`, entries and all, read whole (~1.4 KB a
    learner in memory); `name` is how messages call the snapshot. `read_head` and
    `read_entries` read it in bounded memory."""
    data = read_if_exists(fs, posixpath.join(directory, MANIFEST_NAME))
    if data is None:
        raise _no_manifest(fs, directory, name)
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise SnapshotError(
            f"{name}: {MANIFEST_NAME} is not a valid manifest ({_first(exc)})"
        ) from None


def read_head(fs: fsspec.AbstractFileSystem, directory: str, name: str) -> ManifestHead:
    """The manifest of the snapshot in `directory` without its entries, which are not read
    (`load.manifest.manifest_head`): the same refusals as `read_manifest` for everything but
    the entries, whose own are ManifestErrors raised as `read_entries` reaches them."""
    path = posixpath.join(directory, MANIFEST_NAME)
    with translated(fs, path, "reading"):
        try:
            handle = fs.open(path, "rb")
        except FileNotFoundError:
            handle = None
        if handle is not None:
            with handle:
                try:
                    return manifest_head(handle)
                except ValidationError as exc:
                    raise SnapshotError(
                        f"{name}: {MANIFEST_NAME} is not a valid manifest ({_first(exc)})"
                    ) from None
    raise _no_manifest(fs, directory, name)


def _no_manifest(fs: fsspec.AbstractFileSystem, directory: str, name: str) -> SnapshotError:
    """Why a snapshot has no manifest: no directory at all, or an unfinished run."""
    with translated(fs, directory, "reading"):
        found = fs.isdir(directory)
    if not found:
        return SnapshotNotFound(f"{name}: no such snapshot directory")
    return SnapshotError(f"{name}: not a finished snapshot (no {MANIFEST_NAME})")


def read_entries(fs: fsspec.AbstractFileSystem, directory: str) -> Iterator[FileEntry]:
    """The file entries of the manifest in `directory` (written, published or not), streamed in
    learner id order: one held at a time (`load.manifest.manifest_entries`; an entry that is
    not valid, or a learner out of order, is a ManifestError when it is reached)."""
    path = posixpath.join(directory, MANIFEST_NAME)
    with translated(fs, path, "reading"), fs.open(path, "rb") as handle:
        yield from manifest_entries(handle)


def _first(exc: ValidationError) -> str:
    """The first validation error: where and what, without the offending value."""
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def bytes_problem(data: bytes, size: int, sha256: str) -> str | None:
    """Why `data` (a listed file's whole content) is not the file its entry lists; None if it is."""
    if len(data) != size:
        return f"is {len(data)} bytes, the manifest lists {size}"
    if hashlib.sha256(data).hexdigest() != sha256:
        return "sha256 differs from the manifest: the file is damaged or not the one listed"
    return None


def file_problem(fs: fsspec.AbstractFileSystem, path: str, size: int, sha256: str) -> str | None:
    """Why the file at `path` does not match its entry (missing, other size, other checksum);
    None if it matches. Reads it in pieces, so checking a snapshot holds one piece at a time."""
    with translated(fs, path, "reading"):
        try:
            found = int(fs.size(path))
        except FileNotFoundError:
            return MISSING
        if found != size:
            return f"is {found} bytes, the manifest lists {size}"
        digest = hashlib.sha256()
        with fs.open(path, "rb") as handle:
            while piece := handle.read(_HASH_STEP):
                digest.update(piece)
    if digest.hexdigest() != sha256:
        return "sha256 differs from the manifest: the file is damaged or not the one listed"
    return None


def unlisted_files(
    fs: fsspec.AbstractFileSystem, directory: str, head: ManifestHead, entries: Iterable[FileEntry]
) -> list[str]:
    """Files in the snapshot directory that its manifest (`head` and its `entries`, which are
    consumed) does not list, as relative paths, sorted. Holds the directory's listing, never
    the entries."""
    unlisted = set(list_files(fs, directory)) - head.listed_besides_files()
    for entry in entries:
        unlisted.difference_update(entry_paths(entry))
    return sorted(unlisted)
