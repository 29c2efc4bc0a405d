"""extract.reader on real databases: SQLite and PostgreSQL (through a read-only role)."""

from __future__ import annotations

import gc
import re
import weakref
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from extract.engine import create_source_engine, snapshot
from extract.errors import LearnerNotFound, TerminalExtractError
from extract.queries import LESSON_TOTAL, tables_present_query
from extract.reader import (
    STREAM_ROWS,
    _pipelined,
    _stream,
    all_learner_ids,
    iter_learners,
    iter_optional_batches,
    iter_optional_rows,
    optional_tables_present,
    read_learner,
    read_learners,
    read_users,
)
from extract.records import LearnerRows
from learner_export.demo import BIG_LEARNER_LESSONS
from tests.conftest import DemoSource


@pytest.fixture
def engine(demo_source: DemoSource) -> Iterator[sa.Engine]:
    engine = create_source_engine(demo_source.url)
    yield engine
    engine.dispose()


def _sort_key(row: dict[str, Any]) -> tuple[bool, float, str]:
    created: datetime | None = row["created_at"]
    # created_at descending with NULL last, then id ascending by code point
    return (created is None, -(created.timestamp() if created else 0.0), row["id"])


def test_every_learner_is_listed(engine: sa.Engine, demo_source: DemoSource) -> None:
    with snapshot(engine) as conn:
        assert all_learner_ids(conn) == demo_source.rows.learner_ids


def test_lessons_come_in_contract_order_for_every_learner(
    engine: sa.Engine, demo_source: DemoSource
) -> None:
    with snapshot(engine) as conn:
        found = read_learners(conn, demo_source.rows.learner_ids, lesson_limit=None)
    for learner_id in demo_source.rows.learner_ids:
        expected = sorted(
            (r for r in demo_source.rows.lessons if r["learner_id"] == learner_id), key=_sort_key
        )
        assert [r["id"] for r in found[learner_id].lessons] == [r["id"] for r in expected]
        assert found[learner_id].lesson_total == len(expected)


def test_demo_has_ties_and_a_null_created_at_so_the_order_test_means_something(
    demo_source: DemoSource,
) -> None:
    stamps = [r["created_at"] for r in demo_source.rows.lessons if r["learner_id"] == 3]
    assert len(stamps) != len(set(stamps))  # equal timestamps
    assert any(r["created_at"] is None for r in demo_source.rows.lessons)


def test_cap_keeps_the_most_recent_and_counts_every_lesson(
    engine: sa.Engine, demo_source: DemoSource
) -> None:
    big = demo_source.rows.learner_ids[1]
    with snapshot(engine) as conn:
        capped = read_learner(conn, big, lesson_limit=1000)
        full = read_learner(conn, big, lesson_limit=None)
    assert capped.lesson_total == full.lesson_total == BIG_LEARNER_LESSONS
    assert [r["id"] for r in capped.lessons] == [r["id"] for r in full.lessons[:1000]]


@pytest.mark.parametrize("cap", ["median", "1000"])
def test_a_capped_chunk_keeps_each_learners_most_recent_lessons_and_counts_them_all(
    engine: sa.Engine, demo_source: DemoSource, cap: str
) -> None:
    """A chunk read with a cap (the documents-only archive): learners over the cap (each read by
    a statement of its own) and under it (read together) mixed in one chunk, with non-learners
    and an unknown id, give each learner's most recent lessons in contract order and the count
    of all of them."""
    learners = demo_source.rows.learner_ids
    counts = sorted(
        sum(r["learner_id"] == learner for r in demo_source.rows.lessons) for learner in learners
    )
    limit = counts[len(counts) // 2] if cap == "median" else int(cap)
    with snapshot(engine) as conn:
        found = list(iter_learners(conn, [1, *learners, 999_999], lesson_limit=limit))
    assert [rows.learner_id for rows in found] == learners
    over = 0
    for rows in found:
        expected = sorted(
            (r for r in demo_source.rows.lessons if r["learner_id"] == rows.learner_id),
            key=_sort_key,
        )
        assert [r["id"] for r in rows.lessons] == [r["id"] for r in expected[:limit]]
        assert rows.lesson_total == len(expected)
        assert all(LESSON_TOTAL not in r for r in rows.lessons)
        over += len(expected) > limit
    assert 0 < over < len(found)  # both kinds, in one chunk


def test_achievements_are_most_recent_first(engine: sa.Engine, demo_source: DemoSource) -> None:
    with snapshot(engine) as conn:
        found = read_learners(conn, demo_source.rows.learner_ids, lesson_limit=0)
    for learner_id, rows in found.items():
        expected = sorted(
            (a for a in demo_source.rows.achievements if a["learner_id"] == str(learner_id)),
            key=lambda a: (-a["awarded_at"].timestamp(), a["id"]),
        )
        assert [str(a["id"]) for a in rows.achievements] == [a["id"] for a in expected]


@pytest.mark.parametrize("user_id", [1, 2, 999_999])
def test_non_learners_and_unknown_ids_are_not_found(engine: sa.Engine, user_id: int) -> None:
    with snapshot(engine) as conn, pytest.raises(LearnerNotFound, match=f"learner {user_id} "):
        read_learner(conn, user_id, lesson_limit=1000)


def test_a_chunk_mixing_learners_and_others_returns_only_learners(engine: sa.Engine) -> None:
    with snapshot(engine) as conn:
        assert sorted(read_learners(conn, [1, 2, 3, 999_999], lesson_limit=10)) == [3]


def test_profile_json_arrives_as_stored_text(engine: sa.Engine, demo_source: DemoSource) -> None:
    with snapshot(engine) as conn:
        rows = read_learner(conn, 3, lesson_limit=1)
    stored = next(p for p in demo_source.rows.learner_profiles if p["user_id"] == 3)
    assert rows.profile is not None
    on_postgres = demo_source.kind == "postgresql"
    # PostgreSQL's text arrives as the UTF-8 bytes it sent, never parsed nor decoded.
    expected = stored["subjects"].encode() if on_postgres else stored["subjects"]
    assert rows.profile["subjects"] == expected
    specs = [r["spec"] for r in read_learner_rows(engine, 3).lessons if r["spec"] is not None]
    assert specs and all(type(spec) is bytes for spec in specs) is on_postgres
    assert "password" not in rows.user
    assert rows.json_checked is on_postgres


def test_the_exporter_cannot_write(engine: sa.Engine) -> None:
    """Least privilege on our side: SQLite opened read-only, PostgreSQL read-only sessions."""
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM lessons"))


def test_extra_tables_and_columns_are_ignored(engine: sa.Engine) -> None:
    """The demo adds a table and a users column the contract does not name; reads still work."""
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        columns = {c["name"] for c in sa.inspect(conn).get_columns("users")}
    assert "points" in names and "theme" in columns
    with snapshot(engine) as conn:
        assert set(read_learner(conn, 3, lesson_limit=1).user) == {
            "id", "username", "email", "name", "role", "parent_id", "created_at"
        }  # fmt: skip


def test_learners_come_in_id_order_and_only_learners(
    engine: sa.Engine, demo_source: DemoSource
) -> None:
    ids = demo_source.rows.learner_ids
    with snapshot(engine) as conn:
        whole = read_learners(conn, ids, lesson_limit=1000)
        streamed = iter_learners(conn, [*reversed(ids), 999_999, 1], lesson_limit=1000)
        assert [rows.learner_id for rows in streamed] == sorted(ids)
    assert sorted(whole) == sorted(ids)


def test_closing_the_stream_early_ends_the_snapshot_cleanly(
    engine: sa.Engine, demo_source: DemoSource
) -> None:
    """Closed after the first learner, with the big learner's lessons still to come (on
    PostgreSQL the statement is cancelled): the snapshot still ends without an error, and the
    engine serves the next one."""
    first_two = demo_source.rows.learner_ids[:2]  # the second is the big learner
    with snapshot(engine) as conn:
        learners = iter_learners(conn, first_two, lesson_limit=None)
        first = next(learners)
        learners.close()
    assert first.learner_id == first_two[0]
    with snapshot(engine) as conn:
        assert all_learner_ids(conn) == demo_source.rows.learner_ids


@pytest.mark.postgres
def test_a_failing_streamed_statement_is_reported_like_any_other(
    postgres_demo: DemoSource,
) -> None:
    """Rows the driver streams itself (PostgreSQL only) still fail through SQLAlchemy's errors,
    which `snapshot` translates, with the SQLSTATE and never the database's message."""
    engine = create_source_engine(postgres_demo.url)
    failing = sa.select((sa.literal(1) / sa.literal(0)).label("x"))
    try:
        with pytest.raises(TerminalExtractError, match=r"\(22012\)"), snapshot(engine) as conn:
            list(_stream(conn, failing))
    finally:
        engine.dispose()


def read_learner_rows(engine: sa.Engine, learner_id: int) -> LearnerRows:
    with snapshot(engine) as conn:
        return read_learner(conn, learner_id, lesson_limit=None)


@pytest.mark.postgres
def test_an_older_libpq_streams_row_by_row_with_the_same_rows(
    postgres_demo: DemoSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libpq before 17 has no chunked-rows mode; this machine's is newer, so its version is the
    one thing faked here. The sizes psycopg is asked to stream with are recorded."""
    import psycopg

    sizes: list[int] = []
    stream = psycopg.Cursor.stream

    def recording_stream(self: Any, *args: Any, size: int = 1, **kwargs: Any) -> Any:
        sizes.append(size)
        return stream(self, *args, size=size, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "stream", recording_stream)
    engine = create_source_engine(postgres_demo.url)
    try:
        with snapshot(engine) as conn:
            chunked = read_learners(conn, postgres_demo.rows.learner_ids, lesson_limit=None)
        monkeypatch.setattr(psycopg.pq, "version", lambda: 160_004)
        with snapshot(engine) as conn:
            single = read_learners(conn, postgres_demo.rows.learner_ids, lesson_limit=None)
    finally:
        engine.dispose()
    assert sizes == [STREAM_ROWS, 1]
    assert single == chunked


@pytest.mark.parametrize("learners", [[4], [3, 4]], ids=["one learner", "a chunk"])
def test_a_capped_read_reads_each_lesson_once(sqlite_demo: DemoSource, learners: list[int]) -> None:
    """One learner: the lesson count comes with the capped rows (one statement per table). A
    chunk (`_capped_lessons`): the counts come from the index by learner alone (no stored JSON
    read), then each lesson row is read by one statement only: the plain statement for the run
    of learners under the cap (3), one capped statement for the learner over it (4). SQLite:
    every statement, lessons included, goes through SQLAlchemy's events."""
    engine = create_source_engine(sqlite_demo.url)
    statements: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    try:
        with snapshot(engine) as conn:
            found = read_learners(conn, learners, lesson_limit=1000)
    finally:
        engine.dispose()
    assert (len(found[4].lessons), found[4].lesson_total) == (1000, BIG_LEARNER_LESSONS)
    assert all("lesson_total" not in lesson for lesson in found[4].lessons)
    read = [table for s in statements for table in re.findall(r"\bFROM\s+(\w+)", s)]
    lessons = [s for s in statements if re.search(r"\bFROM\s+lessons\b", s)]
    if len(learners) == 1:
        assert sorted(read) == ["achievements", "learner_profiles", "lessons", "users"]
        return
    assert sorted(set(read)) == ["achievements", "learner_profiles", "lessons", "users"]
    counts, *rows = lessons
    assert "GROUP BY" in counts and "spec" not in counts  # from the index, not the rows
    assert len(rows) == 2 and all("spec" in s for s in rows)  # learner 3's run, then learner 4
    assert [s.upper().count("LIMIT") for s in rows] == [0, 1]


@pytest.mark.postgres
def test_one_learner_on_postgresql_is_read_in_one_round_trip(
    postgres_demo: DemoSource, tmp_path: Path
) -> None:
    """Profiles, achievements and lessons go out together (pipeline mode): libpq's own trace of
    the protocol shows the three statements followed by a single Sync, the one wait for the
    server. The rows are those the chunk reader streams."""
    engine = create_source_engine(postgres_demo.url)
    trace = tmp_path / "libpq.trace"
    try:
        with snapshot(engine) as conn:
            user = read_users(conn, [3])[3]
            driver: Any = conn.connection.driver_connection
            with trace.open("w") as sink:
                driver.pgconn.trace(sink.fileno())
                try:
                    alone = read_learner(conn, 3, lesson_limit=1000, user=user)
                finally:
                    driver.pgconn.untrace()
            chunk = read_learners(conn, [3], lesson_limit=1000)[3]
    finally:
        engine.dispose()
    sent = [line.split("\t") for line in trace.read_text().splitlines()]
    messages = [fields[3].split(" ")[0] for fields in sent if len(fields) > 3 and fields[1] == "F"]
    assert messages.count("Parse") == 3
    assert messages.count("Sync") == 1
    assert alone == chunk


@pytest.mark.postgres
def test_a_failing_pipelined_statement_is_reported_like_any_other(
    postgres_demo: DemoSource,
) -> None:
    engine = create_source_engine(postgres_demo.url)
    failing = sa.select((sa.literal(1) / sa.literal(0)).label("x"))
    try:
        with pytest.raises(TerminalExtractError, match=r"\(22012\)"), snapshot(engine) as conn:
            _pipelined(conn, sa.select(sa.literal(1).label("one")), failing)
    finally:
        engine.dispose()


@pytest.mark.parametrize("table", ["quiz_answers", "concept_mastery"])
def test_optional_rows_in_batches_are_the_rows_one_by_one(engine: sa.Engine, table: str) -> None:
    with snapshot(engine) as conn:
        ids = all_learner_ids(conn)
        # Read to the end: a stream left open would hold its server-side cursor in the snapshot.
        rows = list(iter_optional_rows(conn, table, ids))
        single = [tuple(row.values()) for row in rows]
        columns = list(rows[0].keys())
        batches = list(iter_optional_batches(conn, table, ids, size=7))
        assert list(iter_optional_batches(conn, table, [], size=7)) == []
    assert len(single) > 7 and len(batches) == -(-len(single) // 7)
    assert {names for names, _ in batches} == {tuple(columns)}
    assert [tuple(row) for _, rows in batches for row in rows] == single


def test_an_index_or_an_unknown_name_is_not_a_present_table(
    engine: sa.Engine,
) -> None:
    names = ["quiz_answers", "lessons", "lessons_learner_created_idx", "no_such_table"]
    with snapshot(engine) as conn:
        assert optional_tables_present(conn) == {"quiz_answers": True, "concept_mastery": True}
        # An index is a relation on PostgreSQL and a row of sqlite_master: neither is a table.
        found = conn.scalars(tables_present_query(conn.dialect.name, names))
        assert sorted(found) == ["lessons", "quiz_answers"]


def test_looking_for_the_optional_tables_keeps_no_engine_alive(demo_source: DemoSource) -> None:
    """Every chunk opens and disposes of an engine of its own and asks which optional tables
    exist: nothing may keep those engines' dialects (and their types, adapters and caches) once
    they are gone. SQLAlchemy's inspector kept 128 on PostgreSQL: the flow grew by one a chunk."""
    dialects: list[weakref.ref[sa.Dialect]] = []
    for _ in range(5):
        engine = create_source_engine(demo_source.url)
        with snapshot(engine) as conn:
            assert optional_tables_present(conn)["quiz_answers"]
        dialects.append(weakref.ref(engine.dialect))
        engine.dispose()
        del engine, conn
    gc.collect()
    assert [d for d in dialects if d() is not None] == []
