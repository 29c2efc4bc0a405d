"""`load.restore_target`: the target database, and one learner written all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from load.errors import LoadError, TransientLoadError
from load.restore_target import (
    LearnerRefused,
    MissingParent,
    OnConflict,
    TargetError,
    WriteResult,
    open_target,
    prepare_target,
    write_learner,
)
from tests.conftest import NewTarget
from tests.restore_helpers import learner_row_counts, user_ids
from transform.restore_rows import RestoreRows, restore_rows


@contextmanager
def prepared(url: str) -> Iterator[Engine]:
    """The target at `url`, given its tables; its engine is disposed of afterwards."""
    engine = open_target(url)
    try:
        prepare_target(engine)
        yield engine
    finally:
        engine.dispose()


def write(engine: Engine, rows: RestoreRows) -> WriteResult:
    """`write_learner` with the command's defaults: refuse a conflict, create a missing parent."""
    return write_learner(
        engine, rows, on_conflict=OnConflict.FAIL, missing_parent=MissingParent.CREATE
    )


def test_a_new_sqlite_target_is_created_private_and_gets_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    engine = open_target(f"sqlite:///{path}")
    try:
        assert prepare_target(engine) is True
        assert prepare_target(engine) is False  # already there: left alone
    finally:
        engine.dispose()
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_in_memory_or_unknown_target_is_refused() -> None:
    with pytest.raises(TargetError, match="in-memory"):
        open_target("sqlite://")
    with pytest.raises(TargetError, match="unsupported database kind 'mysql'"):
        open_target("mysql://user@localhost/db")


@pytest.mark.postgres
@pytest.mark.parametrize("template_id", ["template-7", "6F9619FF-8B86-D011-B42D-00C04FC964FF"])
def test_an_id_a_postgresql_uuid_column_would_not_keep_is_refused(
    sqlite_exports: dict[int, bytes], new_target: NewTarget, template_id: str
) -> None:
    # SQLite's text column takes any template id; PostgreSQL's uuid rejects or lowercases it.
    document = orjson.loads(sqlite_exports[3])
    document["lessons"][-1]["templateId"] = template_id
    rows = restore_rows(document)
    url = new_target("postgresql")
    with prepared(url) as engine, pytest.raises(LearnerRefused) as info:
        write(engine, rows)

    last = len(document["lessons"]) - 1
    assert str(info.value).startswith(f"learner 3: /lessons/{last}/templateId is not a lowercase")
    assert user_ids(url) == []


def test_a_row_the_database_rejects_rolls_back_the_whole_learner(
    sqlite_exports: dict[int, bytes], target_url: str
) -> None:
    # The second of two lessons breaks a NOT NULL constraint the document cannot express.
    rows = restore_rows(orjson.loads(sqlite_exports[3]))
    rows.lessons[1]["status"] = None
    with prepared(target_url) as engine, pytest.raises(LoadError) as info:
        write(engine, rows)

    code = "23502" if target_url.startswith("postgresql") else "SQLITE_CONSTRAINT_NOTNULL"
    kind = "postgresql" if target_url.startswith("postgresql") else "sqlite"
    assert str(info.value) == f"writing learner 3 in the {kind} target failed ({code})"
    assert user_ids(target_url) == []  # neither the learner nor its placeholder parent
    assert set(learner_row_counts(target_url, 3).values()) == {0}


def test_the_postgresql_id_sequence_moves_past_restored_ids(
    sqlite_exports: dict[int, bytes], target_url: str
) -> None:
    with prepared(target_url) as engine:
        write(engine, restore_rows(orjson.loads(sqlite_exports[18])))
        with engine.begin() as conn:  # the platform signs up a new user without giving an id
            new_id = conn.execute(
                sa.text("INSERT INTO users (username, role) VALUES ('new', 'PARENT') RETURNING id")
            ).scalar_one()
    assert new_id == 19


def test_an_unreachable_target_is_a_transient_error_without_credentials() -> None:
    engine = open_target("postgresql://restorer:very-secret@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(TransientLoadError) as info:
            prepare_target(engine)
    finally:
        engine.dispose()
    assert "cannot reach the postgresql target" in str(info.value)
    assert "very-secret" not in str(info.value)
