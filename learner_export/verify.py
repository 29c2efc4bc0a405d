"""Re-checking a published snapshot against its manifest.

Every document: present, the recorded size and sha256, decryptable when encrypted (with the
configured key), valid JSON, valid against the document schema, about the learner the manifest
names. Every Parquet part: present, the recorded size and sha256, and the recorded row count in
its footer. Files the manifest does not list are reported too. Problems name paths, ids and
checks, never content.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field

import fsspec
import orjson
from cryptography.fernet import Fernet
from pydantic import ValidationError

from load.codec import ENCRYPTION_SUFFIX, decode_stored
from load.errors import LoadError
from load.manifest import FileEntry, Manifest
from load.snapshot import MANIFEST_NAME, list_files, read_file
from transform.schema import schema_errors


@dataclass
class VerifyReport:
    """What was checked, and every mismatch found (empty when the snapshot is sound)."""

    documents: int = 0
    parquet_parts: int = 0
    problems: list[str] = field(default_factory=list)


def verify_snapshot(
    fs: fsspec.AbstractFileSystem, directory: str, fernet: Fernet | None
) -> VerifyReport:
    """Check the snapshot in `directory` against its manifest.json."""
    report = VerifyReport()
    data = read_file(fs, posixpath.join(directory, MANIFEST_NAME))
    if data is None:
        report.problems.append(f"{MANIFEST_NAME}: missing (not a finished snapshot)")
        return report
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError:
        report.problems.append(f"{MANIFEST_NAME}: not a valid manifest")
        return report
    for entry in manifest.files:
        report.documents += 1
        report.problems += _check_document(fs, directory, entry.path, entry, fernet)
    for table in manifest.parquet.values():
        for part in table.parts:
            report.parquet_parts += 1
            report.problems += _check_parquet(fs, directory, part.path, part.rows)
            stored = read_file(fs, posixpath.join(directory, part.path))
            if stored is not None:
                report.problems += _check_bytes(part.path, stored, part.bytes, part.sha256)
    listed = {MANIFEST_NAME} | {f.path for f in manifest.files}
    listed |= {p.path for t in manifest.parquet.values() for p in t.parts}
    report.problems += [
        f"{name}: not listed in the manifest"
        for name in list_files(fs, directory)
        if name not in listed
    ]
    return report


def _check_bytes(path: str, stored: bytes, size: int, sha256: str) -> list[str]:
    if len(stored) != size:
        return [f"{path}: {len(stored)} bytes, the manifest says {size}"]
    if hashlib.sha256(stored).hexdigest() != sha256:
        return [f"{path}: sha256 differs from the manifest"]
    return []


def _check_document(
    fs: fsspec.AbstractFileSystem,
    directory: str,
    path: str,
    entry: FileEntry,
    fernet: Fernet | None,
) -> list[str]:
    stored = read_file(fs, posixpath.join(directory, path))
    if stored is None:
        return [f"{path}: missing"]
    problems = _check_bytes(path, stored, entry.bytes, entry.sha256)
    if problems:
        return problems
    if path.endswith(ENCRYPTION_SUFFIX) and fernet is None:
        return [f"{path}: encrypted, and no encryption key is configured to check it"]
    try:
        document = orjson.loads(decode_stored(path, stored, fernet))
    except LoadError as exc:
        return [f"{path}: {exc}"]
    except orjson.JSONDecodeError:
        return [f"{path}: not valid JSON"]
    problems = [f"{path}: schema: {line}" for line in schema_errors(document)]
    learner = document.get("learner") if isinstance(document, dict) else None
    if not isinstance(learner, dict) or learner.get("id") != entry.learner_id:
        problems.append(f"{path}: is not the document of learner {entry.learner_id}")
    return problems


def _check_parquet(
    fs: fsspec.AbstractFileSystem, directory: str, path: str, rows: int
) -> list[str]:
    import pyarrow.parquet as pq

    full = posixpath.join(directory, path)
    if not fs.exists(full):
        return [f"{path}: missing"]
    try:
        with fs.open(full, "rb") as handle:
            found = pq.read_metadata(handle).num_rows
    except Exception:  # any unreadable footer is a mismatch, whatever pyarrow raises
        return [f"{path}: not a readable Parquet file"]
    if found != rows:
        return [f"{path}: {found} rows, the manifest says {rows}"]
    return []
