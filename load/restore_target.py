"""Writing one learner's rows into a target database, all or nothing.

The target has the contract's four tables (an empty database gets them created; a database with
only some of them is refused rather than guessed at). Each learner is written in its own
transaction: a refusal or a database error rolls back everything written for that learner,
placeholder parent included, and leaves the other learners alone.

Conflicts are decided before anything is written. A learner *conflicts* when its user id, or the id
of any of its profile, lessons or achievements, is already in the target:

* `fail`    refuse the learner;
* `skip`    leave the target as it is;
* `replace` make the target hold exactly the document: the learner's profile, lessons and
            achievements in the target are deleted and the document's inserted; the `users` row is
            updated in place, so its password (and any column the contract does not know) is kept.
            Replace never touches another person's data: when a clashing id belongs to another
            user, or the user id is not a LEARNER, the learner is refused.

A username or email held by another user is refused under every policy (it cannot be restored
without changing one of them), and so, on PostgreSQL, is a template or achievement id that its
`uuid` columns would reject or respell.
"""

from __future__ import annotations

import enum
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from extract.engine import normalize_url, sqlite_path
from extract.errors import classify_database_error
from extract.tables import achievements, learner_profiles, lessons, metadata, users
from load.database import insert_rows, reset_id_sequence
from load.errors import LoadError, TerminalLoadError, TransientLoadError
from transform.restore_rows import RestoreRows

CONTRACT_TABLES = (users, learner_profiles, lessons, achievements)
_ID_BATCH = 500


class OnConflict(enum.StrEnum):
    SKIP = "skip"
    REPLACE = "replace"
    FAIL = "fail"


class MissingParent(enum.StrEnum):
    CREATE = "create"
    FAIL = "fail"


class LearnerRefused(TerminalLoadError):
    """This learner cannot be written as asked; nothing of it was written."""


class AlreadyInTarget(LearnerRefused):
    """The learner is already in the target and `--on-conflict fail` forbids writing it."""


class TargetError(TerminalLoadError):
    """The target database as a whole cannot take a restore (nothing was written)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What `write_learner` did. `written` is False when the learner was skipped; `replaced` when
    an existing learner was overwritten (its password kept); `placeholder_parent` is the id of a
    PARENT account created holding only its id."""

    written: bool
    replaced: bool = False
    placeholder_parent: int | None = None


def open_target(url: str | URL) -> Engine:
    """A writable engine for the restore target. A missing SQLite file is created, readable by its
    owner only (it will hold children's data)."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend not in {"sqlite", "postgresql"}:
        raise TargetError(f"unsupported database kind {backend!r}: use sqlite or postgresql")
    path = sqlite_path(parsed) if backend == "sqlite" else None
    if backend == "sqlite" and path is None:
        raise TargetError("an in-memory SQLite database would be lost at exit; give a file")
    if path is not None and not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise TargetError(f"cannot create {path} ({exc.strerror or 'error'})") from None
    return sa.create_engine(parsed)


def prepare_target(engine: Engine) -> bool:
    """Create the contract's tables when the target has none of them; True if it did.

    A target holding some but not all of them is refused: it is not a platform database we know.
    """
    with _translated(engine, "preparing the tables"), engine.begin() as conn:
        present = set(sa.inspect(conn).get_table_names())
        have = [t.name for t in CONTRACT_TABLES if t.name in present]
        if len(have) == len(CONTRACT_TABLES):
            return False
        if have:
            missing = sorted({t.name for t in CONTRACT_TABLES} - set(have))
            raise TargetError(
                f"the target has the tables {sorted(have)} but not {missing}; "
                "restore into a platform database or an empty one"
            )
        metadata.create_all(conn, tables=list(CONTRACT_TABLES))
        return True


def write_learner(
    engine: Engine, rows: RestoreRows, *, on_conflict: OnConflict, missing_parent: MissingParent
) -> WriteResult:
    """Write `rows` in one transaction, following the conflict and missing-parent policies.

    Raises `LearnerRefused` (nothing written) when the policies forbid it, and a `LoadError`
    naming the learner and the SQLSTATE (never the database's message, which quotes values) when
    the database rejects a row.
    """
    with _translated(engine, f"writing learner {rows.learner_id}"), engine.begin() as conn:
        if conn.dialect.name == "postgresql" and (problem := _uuid_problem(rows)):
            raise LearnerRefused(f"learner {rows.learner_id}: {problem}")
        clash = _clashes(conn, rows)
        if clash.others:
            raise LearnerRefused(f"learner {rows.learner_id}: {clash.others[0]}")
        replaced = False
        if clash.own:
            if on_conflict is OnConflict.SKIP:
                return WriteResult(written=False)
            if on_conflict is OnConflict.FAIL:
                raise AlreadyInTarget(
                    f"learner {rows.learner_id}: already in the target ({', '.join(clash.own)}); "
                    "--on-conflict fail"
                )
            replaced = True
        placeholder = _ensure_parent(conn, rows, missing_parent)
        if replaced:
            _empty_learner(conn, rows.learner_id)
        if clash.user_exists:
            values = {k: v for k, v in rows.user.items() if k != "id"}
            conn.execute(sa.update(users).where(users.c.id == rows.learner_id).values(values))
        else:
            insert_rows(conn, users, [rows.user])
        insert_rows(conn, learner_profiles, [rows.profile] if rows.profile else [])
        insert_rows(conn, lessons, rows.lessons)
        insert_rows(conn, achievements, rows.achievements)
        reset_id_sequence(conn)
    return WriteResult(written=True, replaced=replaced, placeholder_parent=placeholder)


def _uuid_problem(rows: RestoreRows) -> str | None:
    """Why PostgreSQL's `uuid` columns would not hold these ids as they are, if they would not.

    `uuid` accepts only UUIDs and prints them lowercase with dashes: anything else would be
    rejected, or come back spelled differently in the next export.
    """
    values = [(f"/lessons/{i}/templateId", r["template_id"]) for i, r in enumerate(rows.lessons)]
    values += [(f"/achievements/{i}/id", r["id"]) for i, r in enumerate(rows.achievements)]
    for pointer, value in values:
        if value is not None and not _canonical_uuid(value):
            return (
                f"{pointer} is not a lowercase UUID, which the PostgreSQL target's uuid column "
                "would reject or rewrite"
            )
    return None


def _canonical_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class _Clash:
    user_exists: bool  # the learner's users row is in the target
    own: list[str]  # the learner is already there: what of it was found
    others: list[str]  # ids or unique values held by someone else: never overwritten


def _clashes(conn: Connection, rows: RestoreRows) -> _Clash:
    learner_id = rows.learner_id
    own: list[str] = []
    others: list[str] = []
    role = conn.execute(sa.select(users.c.role).where(users.c.id == learner_id)).scalar()
    if role is not None:
        if role == "LEARNER":
            own.append(f"user {learner_id}")
        else:
            others.append(f"user id {learner_id} is a {role} account in the target, not a learner")
    for column in ("username", "email"):
        value = rows.user[column]
        if value is not None:
            holder = conn.execute(
                sa.select(users.c.id).where(users.c[column] == value, users.c.id != learner_id)
            ).first()
            if holder is not None:
                others.append(f"its {column} belongs to user {holder.id} in the target")
    owned: list[tuple[sa.Table, str, Sequence[str], object]] = [
        (learner_profiles, "user_id", [rows.profile["id"]] if rows.profile else [], learner_id),
        (lessons, "learner_id", [r["id"] for r in rows.lessons], learner_id),
        (achievements, "learner_id", [r["id"] for r in rows.achievements], str(learner_id)),
    ]
    for table, owner_column, ids, owner in owned:
        found = _existing(conn, table, owner_column, ids)
        mine = sum(1 for holder in found.values() if holder == owner)
        if mine:
            own.append(f"{mine} {table.name} row(s)")
        theirs = [row_id for row_id, holder in found.items() if holder != owner]
        if theirs:
            others.append(
                f"{len(theirs)} {table.name} id(s) belong to another learner in the target"
                f" (first: {theirs[0]})"
            )
    return _Clash(user_exists=role is not None, own=own, others=others)


def _existing(
    conn: Connection, table: sa.Table, owner_column: str, ids: Sequence[str]
) -> dict[str, Any]:
    """Which of `ids` are already in `table`, and whose they are."""
    found: dict[str, Any] = {}
    for start in range(0, len(ids), _ID_BATCH):
        batch = list(ids[start : start + _ID_BATCH])
        id_column = table.c.id
        # uuid columns compare as text, so an id that is not a UUID cannot break the lookup.
        key = sa.cast(id_column, sa.Text) if conn.dialect.name == "postgresql" else id_column
        statement = sa.select(key.label("id"), table.c[owner_column].label("owner")).where(
            key.in_(batch)
        )
        found.update((str(row.id), row.owner) for row in conn.execute(statement))
    return found


def _ensure_parent(conn: Connection, rows: RestoreRows, policy: MissingParent) -> int | None:
    """Make sure the learner's parent exists; the id of a placeholder created, if any."""
    parent_id = rows.parent_id
    if parent_id is None or parent_id == rows.learner_id:
        return None
    exists = conn.execute(sa.select(users.c.id).where(users.c.id == parent_id)).first()
    if exists is not None:
        return None
    if policy is MissingParent.FAIL:
        raise LearnerRefused(
            f"learner {rows.learner_id}: parent {parent_id} is not in the target "
            "(--missing-parent fail)"
        )
    placeholder = {
        "id": parent_id,
        "username": None,
        "email": None,
        "name": None,
        "role": "PARENT",
        "password": None,
        "parent_id": None,
        "created_at": None,
    }
    insert_rows(conn, users, [placeholder])
    return parent_id


def _empty_learner(conn: Connection, learner_id: int) -> None:
    """Delete the learner's profile, lessons and achievements (the `users` row stays)."""
    conn.execute(sa.delete(lessons).where(lessons.c.learner_id == learner_id))
    conn.execute(sa.delete(achievements).where(achievements.c.learner_id == str(learner_id)))
    conn.execute(sa.delete(learner_profiles).where(learner_profiles.c.user_id == learner_id))


@contextmanager
def _translated(engine: Engine, doing: str) -> Iterator[None]:
    """Database errors as `LoadError`s naming what was being done and the SQLSTATE only."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise _translate(exc, engine, doing) from None


def _translate(exc: sa.exc.DBAPIError, engine: Engine, doing: str) -> LoadError:
    fault = classify_database_error(exc)
    target = f"the {engine.dialect.name} target"
    if not fault.answered and fault.transient:
        return TransientLoadError(
            f"{doing}: cannot reach {target} ({fault.code}); it may be retried"
        )
    where = f"{doing} in {target} failed ({fault.code})"
    if fault.transient:
        return TransientLoadError(f"{where}; it may be retried")
    return TerminalLoadError(where)
