"""The indexes an export needs in the source, and which of them it lacks. Read from the
database's catalog; never created here (the exporter only reads: an operator runs the printed
statements, `learner-export indexes`).

Every export looks a learner's rows up by learner in three tables. The platform's own schema has
no index on those columns (only primary keys, unique e-mails and usernames, and a partial unique
index on ACTIVE lessons), so without them each export scans the three tables whole: a cost that
grows with the platform, not with the learner.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from extract.engine import create_source_engine, snapshot
from extract.errors import ExtractError


@dataclass(frozen=True, slots=True)
class NeededIndex:
    """An index whose first column is `table.column`; `name` and `columns` are what we suggest
    for it (lessons: also `created_at`, the order the most recent 1,000 are read in)."""

    table: str
    column: str
    name: str
    columns: str

    def create_statement(self, dialect: str) -> str:
        """The statement that creates it: on PostgreSQL without blocking writes (CONCURRENTLY,
        which cannot run inside a transaction block: run the statements one by one)."""
        concurrently = " CONCURRENTLY" if dialect == "postgresql" else ""
        return (
            f"CREATE INDEX{concurrently} IF NOT EXISTS {self.name} "
            f"ON {self.table} ({self.columns});"
        )


NEEDED_INDEXES = (
    NeededIndex("lessons", "learner_id", "lessons_learner_created_idx", "learner_id, created_at"),
    NeededIndex("achievements", "learner_id", "achievements_learner_idx", "learner_id"),
    NeededIndex("learner_profiles", "user_id", "learner_profiles_user_idx", "user_id"),
)


def missing_indexes(conn: Connection) -> list[NeededIndex]:
    """The needed indexes the source lacks, in NEEDED_INDEXES order. An index, primary key or
    unique constraint counts when `column` is its first column (a partial index does not: it
    covers only some rows)."""
    inspector = sa.inspect(conn)
    missing = []
    for needed in NEEDED_INDEXES:
        where = f"{conn.dialect.name}_where"
        leading = [
            index["column_names"][0]
            for index in inspector.get_indexes(needed.table)
            if index["column_names"] and index.get("dialect_options", {}).get(where) is None
        ]
        primary = inspector.get_pk_constraint(needed.table).get("constrained_columns") or []
        unique = [c["column_names"][0] for c in inspector.get_unique_constraints(needed.table)]
        if needed.column not in {*leading, *primary[:1], *unique}:
            missing.append(needed)
    return missing


def missing_index_columns(url: str) -> tuple[str, ...] | None:
    """`table.column` of each needed index the source at `url` lacks, in NEEDED_INDEXES order;
    None when the source cannot be read (whoever reads it next reports why)."""
    engine: Engine | None = None
    try:
        engine = create_source_engine(url)
        with snapshot(engine) as conn:
            missing = missing_indexes(conn)
    except (ExtractError, sa.exc.SQLAlchemyError):
        return None
    finally:
        if engine is not None:
            engine.dispose()
    return tuple(f"{m.table}.{m.column}" for m in missing)


def missing_index_warning(url: str) -> str | None:
    """One line for an operator naming the needed indexes the source at `url` lacks, or None
    when it has them all or cannot be read (the command's own checks report that)."""
    missing = missing_index_columns(url)
    if not missing:
        return None
    return (
        f"the source has no index on {', '.join(missing)}: every export reads those tables whole; "
        "`learner-export indexes` prints the CREATE INDEX statements"
    )
