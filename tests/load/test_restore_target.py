"""`load.restore_target`: the target database, and one learner written all or nothing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from load.errors import LoadError
from load.restore_target import (
    MissingParent,
    OnConflict,
    TargetError,
    open_target,
    prepare_target,
    write_learner,
)
from tests.load.conftest import NewTarget
from tests.load.restore_helpers import learner_row_counts, user_ids
from transform.restore_rows import restore_rows


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
def test_a_row_the_database_rejects_rolls_back_the_whole_learner(
    sqlite_exports: dict[int, bytes], new_target: NewTarget
) -> None:
    # A template id that is not a UUID: SQLite's text column takes it, PostgreSQL's uuid does not.
    document = orjson.loads(sqlite_exports[3])
    document["lessons"][-1]["templateId"] = "template-7"
    rows = restore_rows(document)
    url = new_target("postgresql")
    engine = open_target(url)
    try:
        prepare_target(engine)
        with pytest.raises(LoadError) as info:
            write_learner(
                engine, rows, on_conflict=OnConflict.FAIL, missing_parent=MissingParent.CREATE
            )
    finally:
        engine.dispose()

    assert str(info.value) == "writing learner 3 in the postgresql target failed (22P02)"
    assert user_ids(url) == []  # neither the learner nor its placeholder parent
    assert set(learner_row_counts(url, 3).values()) == {0}


def test_the_postgresql_id_sequence_moves_past_restored_ids(
    sqlite_exports: dict[int, bytes], target_url: str
) -> None:
    engine = open_target(target_url)
    try:
        prepare_target(engine)
        write_learner(
            engine,
            restore_rows(orjson.loads(sqlite_exports[18])),
            on_conflict=OnConflict.FAIL,
            missing_parent=MissingParent.CREATE,
        )
        with engine.begin() as conn:  # the platform signs up a new user without giving an id
            new_id = conn.execute(
                sa.text("INSERT INTO users (username, role) VALUES ('new', 'PARENT') RETURNING id")
            ).scalar_one()
    finally:
        engine.dispose()
    assert new_id == 19
