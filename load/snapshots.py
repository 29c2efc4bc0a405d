"""Reading a snapshot directory back: its manifest, and each listed file checked against it.

The interface the archival flows write to (the reading side is all this module assumes):

    SNAPSHOT/manifest.json   {"files": [ENTRY, ...], ...any other keys...}
    ENTRY                    {"path": "learner-data-3-2024-01-15.json.gz.enc",  (relative)
                              "learner_id": 3, "bytes": 48213, "sha256": "<64 hex digits>",
                              "lessons_total": 1050, "truncated": true,          (optional)
                              ...any other keys...}

`bytes` and `sha256` describe the file exactly as stored (after compression and encryption).
Entries whose `path` is not named like a document (`.json`, `.json.gz`, `.json.zst`, each
optionally `.enc`) are other outputs of the run, and are ignored.
A manifest that cannot be trusted as a whole (unreadable, not this shape, a path leaving the
snapshot, a learner listed twice) is a `SnapshotError`; a file that does not match its entry is
reported per entry by `check_entry`, so the other learners can still be restored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from load.document_files import document_format, read_file
from load.errors import TerminalLoadError

MANIFEST_NAME = "manifest.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class SnapshotError(TerminalLoadError):
    """The snapshot's manifest is missing or cannot be trusted; nothing of it is restored."""


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One listed document file. `path` is inside the snapshot directory; `size` and `sha256` are
    what the file must have; `lessons_total`/`truncated` are None when the manifest omits them."""

    path: Path
    learner_id: int
    size: int
    sha256: str
    lessons_total: int | None = None
    truncated: bool | None = None


def read_manifest(snapshot: Path) -> list[ManifestEntry]:
    """The entries of `snapshot/manifest.json`, in manifest order."""
    manifest_path = snapshot / MANIFEST_NAME
    if not manifest_path.is_file():
        raise SnapshotError(f"{snapshot}: not a snapshot (no {MANIFEST_NAME})")
    try:
        manifest = orjson.loads(read_file(manifest_path))
    except orjson.JSONDecodeError:
        raise SnapshotError(f"{manifest_path}: is not valid JSON") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, list):
        raise SnapshotError(f"{manifest_path}: has no 'files' list")
    entries = [
        _entry(snapshot, manifest_path, index, item)
        for index, item in enumerate(files)
        if not _other_file(item)
    ]
    seen: set[int] = set()
    for entry in entries:
        if entry.learner_id in seen:
            raise SnapshotError(f"{manifest_path}: lists learner {entry.learner_id} twice")
        seen.add(entry.learner_id)
    return entries


def _entry(snapshot: Path, manifest_path: Path, index: int, item: Any) -> ManifestEntry:
    where = f"{manifest_path}: files[{index}]"
    if not isinstance(item, dict):
        raise SnapshotError(f"{where} is not an object")
    relative, sha256 = item.get("path"), item.get("sha256")
    if not isinstance(relative, str) or not _inside(relative):
        raise SnapshotError(f"{where}: 'path' must be a relative path inside the snapshot")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.lower()):
        raise SnapshotError(f"{where}: 'sha256' must be 64 hex digits")
    lessons_total, truncated = item.get("lessons_total"), item.get("truncated")
    return ManifestEntry(
        path=snapshot / relative,
        learner_id=_integer(item, "learner_id", where, minimum=1),
        size=_integer(item, "bytes", where, minimum=0),
        sha256=sha256.lower(),
        lessons_total=lessons_total if _positive_int(lessons_total) else None,
        truncated=truncated if isinstance(truncated, bool) else None,
    )


def _other_file(item: Any) -> bool:
    """An entry for a file that is not a learner document (a Parquet table, a log): not ours."""
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        return False
    return document_format(PurePosixPath(item["path"]).name) is None


def _integer(item: dict[str, Any], key: str, where: str, *, minimum: int) -> int:
    value = item.get(key)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # an id written as text is still that id
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SnapshotError(f"{where}: {key!r} must be an integer of at least {minimum}")
    return value


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _inside(relative: str) -> bool:
    """A plain relative path that cannot leave the snapshot (no `..`, not absolute)."""
    path = PurePosixPath(relative)
    return (
        bool(relative)
        and not path.is_absolute()
        and ".." not in path.parts
        and "\\" not in relative
    )


def check_entry(entry: ManifestEntry, data: bytes) -> str | None:
    """Why `data` (the listed file's content) is not the file the manifest lists; None if it is."""
    if len(data) != entry.size:
        return f"is {len(data)} bytes, the manifest lists {entry.size}: not the file it lists"
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        return "sha256 checksum mismatch: the file is damaged or not the one the manifest lists"
    return None


def verify_entry(entry: ManifestEntry) -> str | None:
    """Why the file on disk does not match `entry` (missing, other size, other checksum); None if
    it matches. Reads the file in pieces, so checking a snapshot holds one piece at a time."""
    try:
        size = entry.path.stat().st_size
        if size != entry.size:
            return f"is {size} bytes, the manifest lists {entry.size}: not the file it lists"
        digest = hashlib.sha256()
        with entry.path.open("rb") as handle:
            while piece := handle.read(1024 * 1024):
                digest.update(piece)
    except FileNotFoundError:
        return "is missing from the snapshot"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or 'error'})"
    if digest.hexdigest() != entry.sha256:
        return "sha256 checksum mismatch: the file is damaged or not the one the manifest lists"
    return None
