"""Writing rows into a database that has the contract's tables (the demo database, restores).

Never used on the export path: the exporter only reads its source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from extract.tables import JSON_COLUMNS

INSERT_BATCH_ROWS = 500


def insert_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` into `table`; JSON columns take JSON *text*, stored exactly as given.

    On PostgreSQL the text is cast to `json` by the server (which keeps it verbatim), on SQLite it
    is stored as TEXT, so both databases hold the same bytes.
    """
    if not rows:
        return
    statement: sa.Insert = table.insert()
    json_columns = JSON_COLUMNS.get(table.name, ())
    if conn.dialect.name == "postgresql" and json_columns:
        statement = statement.values(
            {
                column.name: (
                    sa.cast(sa.bindparam(f"json_{column.name}", type_=sa.Text), column.type)
                    if column.name in json_columns
                    else sa.bindparam(f"value_{column.name}", type_=column.type)
                )
                for column in table.columns
                if column.name in rows[0]
            }
        )
        rows = [
            {(f"json_{k}" if k in json_columns else f"value_{k}"): v for k, v in row.items()}
            for row in rows
        ]
    for start in range(0, len(rows), INSERT_BATCH_ROWS):
        conn.execute(statement, list(rows[start : start + INSERT_BATCH_ROWS]))


def reset_id_sequence(conn: Connection) -> None:
    """After inserting explicit ids into `users`, move PostgreSQL's serial past them."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('users', 'id'),"
                " GREATEST((SELECT max(id) FROM users), 1))"
            )
        )


def drop_tables(conn: Connection, tables: Sequence[sa.Table]) -> None:
    """Drop `tables` (children first) and, on PostgreSQL, the enum types they use."""
    for table in reversed(tables):
        table.drop(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        for enum_name in ("lesson_status", "user_role"):
            conn.execute(sa.text(f'DROP TYPE IF EXISTS "{enum_name}"'))
