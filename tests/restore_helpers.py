"""Factories for the restore tests: export every demo learner, write documents and snapshots the
way the export and archival flows do, and count what a target database holds for a learner."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from cryptography.fernet import Fernet

from extract.engine import create_source_engine, snapshot
from extract.reader import all_learner_ids, read_learners
from extract.tables import achievements, learner_profiles, lessons, users
from load.codec import encode_stored, stored_format
from load.manifest import MANIFEST_NAME, Counts, FileEntry, Manifest, RunParameters, to_json
from load.names import document_filename
from transform.document import LESSON_CAP, build_document
from transform.encoding import encode_document

EXPORT_DATE = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
EXPORTED_BY = 1


def export_all(url: str) -> dict[int, bytes]:
    """Every learner's document at `url`, encoded, with a fixed exportDate and exportedBy."""
    engine = create_source_engine(url)
    try:
        with snapshot(engine) as conn:
            ids = all_learner_ids(conn)
            rows = read_learners(conn, ids, lesson_limit=LESSON_CAP)
    finally:
        engine.dispose()
    return {
        learner_id: encode_document(
            build_document(
                rows[learner_id], export_date=EXPORT_DATE, exported_by=EXPORTED_BY
            ).document
        )
        for learner_id in ids
    }


def write_documents(
    directory: Path,
    documents: Mapping[int, bytes],
    *,
    suffix: str = "",
    key: bytes | None = None,
) -> list[Path]:
    """One file per document, named as contract §4 says and stored as its `suffix` says, by the
    archive's own encoder (`key` is the Fernet key of a suffix ending in .enc, and is not used
    otherwise); the paths in learner id order."""
    directory.mkdir(parents=True, exist_ok=True)
    stored = stored_format(suffix)
    fernet = None
    if stored.encrypted:
        assert key is not None, "a suffix ending in .enc needs the key"
        fernet = Fernet(key)
    paths = []
    for learner_id in sorted(documents):
        path = directory / document_filename(learner_id, EXPORT_DATE, suffix=suffix)
        path.write_bytes(encode_stored(documents[learner_id], stored.compression, fernet))
        paths.append(path)
    return paths


def make_snapshot(
    directory: Path,
    documents: Mapping[int, bytes],
    *,
    suffix: str = "",
    key: bytes | None = None,
    extra: Mapping[int, Mapping[str, Any]] | None = None,
) -> Path:
    """A snapshot directory as the archival flow writes it: the files and `manifest.json` (built
    with the manifest model; `extra` overrides fields of a learner's file entry)."""
    paths = write_documents(directory, documents, suffix=suffix, key=key)
    files = []
    for learner_id, path in zip(sorted(documents), paths, strict=True):
        data = path.read_bytes()
        lessons = len(orjson.loads(documents[learner_id])["lessons"])
        entry: dict[str, Any] = {
            "path": path.name,
            "learner_id": learner_id,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "lessons_exported": lessons,
            "lessons_total": lessons,
            "truncated": False,
        }
        entry.update((extra or {}).get(learner_id, {}))
        files.append(FileEntry.model_validate(entry))
    (directory / MANIFEST_NAME).write_bytes(to_json(manifest_of(files)))
    return directory


def manifest_of(files: list[FileEntry]) -> Manifest:
    """A manifest listing `files`, as a run of documents only would write it."""
    at = EXPORT_DATE.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Manifest(
        run_id="2024-01-15",
        export_date=at,
        started_at=at,
        finished_at=at,
        duration_seconds=1.0,
        parameters=RunParameters(
            learners="all",
            chunk_size=200,
            compress=None,
            encrypt=False,
            exported_by=EXPORTED_BY,
            parquet=False,
        ),
        counts=Counts(
            learners_requested=len(files),
            learners_exported=len(files),
            files=len(files),
            bytes=sum(f.bytes for f in files),
            truncated=sum(f.truncated for f in files),
            not_found=0,
            failed=0,
            problems=0,
        ),
        files=files,
        parquet={},
        not_found=[],
        failures=[],
        chunks=1,
    )


@contextmanager
def connected(url: str) -> Iterator[sa.Connection]:
    """A connection to the database at `url`; its engine is disposed of afterwards."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def learner_row_counts(url: str, learner_id: int) -> dict[str, int]:
    """How many rows of each table the target holds for this learner (user, profile, ...); all
    0 when it has no tables yet."""
    belongs = {
        users: users.c.id == learner_id,
        learner_profiles: learner_profiles.c.user_id == learner_id,
        lessons: lessons.c.learner_id == learner_id,
        achievements: achievements.c.learner_id == str(learner_id),
    }
    with connected(url) as conn:
        if not sa.inspect(conn).has_table("users"):
            return {table.name: 0 for table in belongs}
        return {
            table.name: conn.execute(
                sa.select(sa.func.count()).select_from(table).where(condition)
            ).scalar_one()
            for table, condition in belongs.items()
        }


def user_ids(url: str) -> list[int]:
    """Every user id in the target, ascending ([] when it has no tables yet)."""
    with connected(url) as conn:
        if not sa.inspect(conn).has_table("users"):
            return []
        return list(conn.execute(sa.select(users.c.id).order_by(users.c.id)).scalars())


def edited(document: bytes, change: Iterable[tuple[tuple[str | int, ...], Any]]) -> bytes:
    """`document` with the values at these key paths replaced (a path ending in a new key adds
    it)."""
    decoded = orjson.loads(document)
    for path, value in change:
        target = decoded
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
    return orjson.dumps(decoded)
