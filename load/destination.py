"""Where snapshots are written: a destination (any fsspec URL, local disk by default), its run
directories, atomic writes into them, publishing and retention.

Reading a published snapshot back against its manifest is `load.snapshot_files`.

Layout, for a destination `<dest>` and a run id `<run>`:

    <dest>/.incomplete/<run>/    a run being written: documents, `parquet/`, `parts/`, `plan.json`
    <dest>/<run>/                a finished snapshot; complete exactly when it holds manifest.json
    <dest>/.deleted/<run>.json   a record of each snapshot removed by retention

A reader never sees a half-written run: everything is written under `.incomplete/` and published
at the end. On a local disk publishing is one directory rename (manifest.json included, written
last); on an object store, which has no rename, every object is moved and manifest.json is moved
last, so a snapshot prefix without manifest.json is not (yet) a snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from load.errors import LoadError, TerminalLoadError, os_error
from load.files import AtomicBatch, fsync_directory, write_atomic
from load.manifest import MANIFEST_NAME

INCOMPLETE_DIR = ".incomplete"
DELETED_DIR = ".deleted"

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


def check_run_id(run_id: str) -> str:
    """`run_id` if it is one safe path component (letters, digits, `.`, `_`, `-`; not hidden)."""
    if not _RUN_ID.fullmatch(run_id):
        raise TerminalLoadError(
            f"run id {run_id!r} is not allowed: use up to 80 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_id


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file that exists, complete, at `path` (a path of the destination's file system)."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Destination:
    """Where snapshots go: a file system and a root path in it. `name` is printable (no options
    or credentials, only the protocol and path)."""

    fs: fsspec.AbstractFileSystem
    root: str

    @property
    def name(self) -> str:
        return _printable(self.fs, self.root)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def incomplete_dir(self, run_id: str) -> str:
        return posixpath.join(self.root, INCOMPLETE_DIR, check_run_id(run_id))

    def snapshot_dir(self, run_id: str) -> str:
        return posixpath.join(self.root, check_run_id(run_id))


def check_no_credentials(url: str) -> str:
    """`url` if it holds no credentials (`user:password@`); refused otherwise, without quoting it.

    Destinations get their credentials from the storage library's standard sources (the AWS
    variables, profiles, instance roles): a URL is printed, logged and stored with each run.
    """
    try:
        netloc = urlsplit(url).netloc if "://" in url else ""
    except ValueError:  # e.g. an unclosed IPv6 bracket; the message may quote the URL
        raise TerminalLoadError("cannot open the destination: malformed URL") from None
    if "@" in netloc:
        raise TerminalLoadError(
            "the destination URL must not hold credentials; give them to the storage "
            "library through its environment (e.g. AWS_* variables) instead"
        )
    return url


def open_destination(url: str) -> Destination:
    """The destination behind `url`: a local path or any fsspec URL (`s3://bucket/prefix`,
    `memory://archive`). Nothing is created until something is written. A URL holding
    credentials is refused (`check_no_credentials`)."""
    check_no_credentials(url)
    protocol, _ = fsspec.core.split_protocol(url)
    # A destination is shared: Dask workers, the flow process, readers and other runs write and
    # list it at once. fsspec's listings cache would answer from one process's past listing
    # (files another process wrote since look absent), so remote stores are always listed anew.
    options = {} if protocol in {None, "file", "local"} else {"use_listings_cache": False}
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        # A missing backend: the message names the package to install, not the URL.
        raise TerminalLoadError(f"cannot open the destination: {exc}") from None
    except ValueError:
        # The message may quote the URL, and a URL may carry credentials.
        raise TerminalLoadError(
            "cannot open the destination: unknown protocol or malformed URL"
        ) from None
    return Destination(fs=fs, root=str(root).rstrip("/") or "/")


def open_snapshot(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system and directory of one snapshot given by path or URL."""
    destination = open_destination(url)
    return destination.fs, destination.root


def _printable(fs: fsspec.AbstractFileSystem, path: str) -> str:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in {"file", "local"} else f"{protocol}://{path.lstrip('/')}"


@contextmanager
def translated(fs: fsspec.AbstractFileSystem, path: str, action: str) -> Iterator[None]:
    """Turn OS and file-system errors into LoadErrors naming `action` and the path."""
    try:
        yield
    except LoadError:
        raise
    except OSError as exc:
        raise os_error(exc, f"{action} {_printable(fs, path)}") from None


def write_file(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> StoredFile:
    """Write `data` at `path` so that the file is either absent or complete, replacing any file
    of that name; returns its size and sha256.

    Local disk: a temporary name in the same directory, fsync, rename (`load.files.write_atomic`).
    Object stores: one PUT, which stores the whole object or nothing.
    """
    if isinstance(fs, LocalFileSystem):
        directory, name = Path(posixpath.dirname(path)), posixpath.basename(path)
        written = write_atomic(directory, name, data)
        return StoredFile(path=path, bytes=written.size, sha256=written.sha256)
    with translated(fs, path, "writing"):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, data)
    return StoredFile(path=path, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def write_pieces(fs: fsspec.AbstractFileSystem, path: str, pieces: Iterable[bytes]) -> StoredFile:
    """`write_file` of the concatenation of `pieces`, for files too large to build in memory.

    Local disk: the pieces stream into the temporary file, one held at a time. Object stores:
    joined, then one PUT, which is what keeps the object complete or absent there.
    """
    if isinstance(fs, LocalFileSystem):
        with AtomicBatch(Path(posixpath.dirname(path))) as batch:
            written = batch.add_pieces(posixpath.basename(path), pieces)
        return StoredFile(path=path, bytes=written.size, sha256=written.sha256)
    return write_file(fs, path, b"".join(pieces))


class FileBatch:
    """Files written into one directory of a destination and made durable together.

    Local disk: an `AtomicBatch` (temporary names, one flush for the batch, renames, the
    directory flushed); nothing is visible under its name before `commit`. Object stores: each
    `write` is one PUT, complete or absent on its own, and `commit` has nothing left to do.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, directory: str) -> None:
        self.fs = fs
        self.directory = directory
        self._local = AtomicBatch(Path(directory)) if isinstance(fs, LocalFileSystem) else None

    def write(self, name: str, data: bytes) -> StoredFile:
        path = posixpath.join(self.directory, name)
        if self._local is None:
            return write_file(self.fs, path, data)
        written = self._local.add(name, data)
        return StoredFile(path=path, bytes=written.size, sha256=written.sha256)

    def commit(self) -> None:
        if self._local is not None:
            self._local.commit()

    def abort(self) -> None:
        """Remove what was written and not committed (local disk)."""
        if self._local is not None:
            self._local.abort()


def check_writable(destination: Destination) -> None:
    """Prove the destination takes files: write and remove an empty probe file in its root.
    Raises a LoadError naming the path and the reason (read-only, no space, not a directory).
    Leaves nothing behind: directories made for the probe are removed again."""
    fs, root = destination.fs, destination.root
    probe = posixpath.join(root, f".probe-{os.urandom(6).hex()}")
    made: list[Path] = []
    if destination.is_local:  # the directories the probe's write will create
        missing = Path(root)
        while not missing.exists() and missing != missing.parent:
            made.append(missing)
            missing = missing.parent
    try:
        write_file(fs, probe, b"")
        with translated(fs, probe, "removing"):
            fs.rm_file(probe)
    finally:
        for directory in made:  # deepest first
            with contextlib.suppress(OSError):
                directory.rmdir()


def read_if_exists(fs: fsspec.AbstractFileSystem, path: str) -> bytes | None:
    """The bytes at `path`, or None when there is no such file (other errors are LoadErrors)."""
    with translated(fs, path, "reading"):
        try:
            data: bytes = fs.cat_file(path)
        except FileNotFoundError:
            return None
    return data


def list_files(fs: fsspec.AbstractFileSystem, directory: str) -> list[str]:
    """Every file below `directory`, as paths relative to it, sorted; [] when it is absent.

    On local disk the names come from the directory entries alone: fsspec's `find` builds a
    dict of details (size, mode, times) for every file first, about 1 KB each, which for a run
    of 20,000 learners was the largest thing its publishing step held."""
    with translated(fs, directory, "listing"):
        if not fs.isdir(directory):
            return []
        if isinstance(fs, LocalFileSystem):
            return sorted(_local_files(Path(fs._strip_protocol(directory))))
        found = fs.find(directory)
    prefix = directory.rstrip("/") + "/"
    return sorted(str(p).removeprefix(prefix) for p in found if str(p).startswith(prefix))


def _local_files(root: Path) -> Iterator[str]:
    """The files below `root` (symbolic links included, not followed), relative, POSIX style."""
    for top, dirs, files in os.walk(root):
        relative = Path(top).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        # A link to a directory is listed by walk among the directories; find lists it as a file.
        names = files + [d for d in dirs if (Path(top) / d).is_symlink()]
        yield from (prefix + name for name in names)


def remove_files(fs: fsspec.AbstractFileSystem, directory: str, relative: list[str]) -> None:
    """Remove these files (paths relative to `directory`)."""
    for name in relative:
        path = posixpath.join(directory, name)
        with translated(fs, path, "removing"):
            fs.rm_file(path)


def remove_dir(fs: fsspec.AbstractFileSystem, directory: str) -> None:
    """Remove the empty `directory` if it is there (object stores have no directories)."""
    with translated(fs, directory, "removing"):
        if fs.isdir(directory) and not fs.ls(directory):
            fs.rmdir(directory)


def remove_empty_dirs(fs: fsspec.AbstractFileSystem, directory: str) -> None:
    """Remove the empty directories below `directory` (object stores have none)."""
    with translated(fs, directory, "removing"):
        if not fs.isdir(directory):
            return
        if isinstance(fs, LocalFileSystem):  # the entries alone, as `list_files`
            root = Path(fs._strip_protocol(directory))
            # Children before their parents; links to directories are not descended into.
            for top, _, _ in os.walk(root, topdown=False):
                below = Path(top)
                if below != root and next(below.iterdir(), None) is None:
                    below.rmdir()
            return
        found = fs.find(directory, withdirs=True, detail=True)
        dirs = [str(p) for p, info in found.items() if info["type"] == "directory"]
        for path in sorted(dirs, key=len, reverse=True):
            if path.rstrip("/") != directory.rstrip("/") and not fs.ls(path):
                fs.rmdir(path)


def publish(destination: Destination, run_id: str) -> str:
    """Move the run's complete `.incomplete/<run>/` (which already holds manifest.json) to
    `<dest>/<run>/`, manifest.json arriving last; returns the snapshot directory.

    Safe to repeat after an interruption: objects already moved are not moved again.
    """
    source = destination.incomplete_dir(run_id)
    target = destination.snapshot_dir(run_id)
    fs = destination.fs
    if destination.is_local:
        with translated(fs, target, "publishing"):
            if not Path(target).exists():
                Path(source).rename(target)  # one atomic step: the snapshot appears whole
                fsync_directory(Path(target).parent)
        remove_incomplete_root(destination)
        return target
    names = list_files(fs, source)
    ordered = [n for n in names if n != MANIFEST_NAME] + [n for n in names if n == MANIFEST_NAME]
    for name in ordered:
        with translated(fs, posixpath.join(target, name), "publishing"):
            fs.mv(posixpath.join(source, name), posixpath.join(target, name))
    with translated(fs, source, "removing"):
        if fs.exists(source):
            fs.rm(source, recursive=True)
    return target


def remove_incomplete_root(destination: Destination) -> None:
    """Remove `<dest>/.incomplete/` once no unfinished run is left in it (local disk; object
    stores have no empty directories)."""
    if destination.is_local:
        with contextlib.suppress(OSError):  # not empty: another run is unfinished
            Path(destination.root, INCOMPLETE_DIR).rmdir()


def published_runs(destination: Destination) -> list[str]:
    """Run ids of the finished snapshots under the destination (those holding manifest.json)."""
    fs = destination.fs
    with translated(fs, destination.root, "listing"):
        if not fs.isdir(destination.root):
            return []
        entries = fs.ls(destination.root, detail=True)
    runs = []
    for entry in entries:
        name = posixpath.basename(str(entry["name"]).rstrip("/"))
        if entry["type"] != "directory" or not _RUN_ID.fullmatch(name):
            continue
        with translated(fs, destination.root, "listing"):
            if fs.exists(posixpath.join(destination.snapshot_dir(name), MANIFEST_NAME)):
                runs.append(name)
    return sorted(runs)


def delete_snapshot(destination: Destination, run_id: str, record: bytes) -> None:
    """Remove a finished snapshot, first writing `record` to `.deleted/<run>.json`.

    manifest.json goes first, so an interrupted deletion leaves no directory that looks complete.
    """
    fs = destination.fs
    directory = destination.snapshot_dir(run_id)
    write_file(fs, posixpath.join(destination.root, DELETED_DIR, f"{run_id}.json"), record)
    with translated(fs, directory, "deleting"):
        manifest = posixpath.join(directory, MANIFEST_NAME)
        if fs.exists(manifest):
            fs.rm_file(manifest)
        if fs.exists(directory):
            fs.rm(directory, recursive=True)
