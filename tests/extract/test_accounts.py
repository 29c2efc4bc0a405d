"""`accounts_query` / `read_accounts`: who a user is, for authorization, on both databases."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql

from extract.engine import create_source_engine, snapshot
from extract.queries import accounts_query
from extract.reader import read_accounts
from extract.records import Account
from tests.conftest import DemoSource


def test_the_query_never_reads_the_password() -> None:
    sql = str(accounts_query([1, 2]).compile(dialect=postgresql.dialect()))
    assert "password" not in sql
    assert "email" not in sql


def test_reads_role_and_parent_of_existing_ids_only(demo_source: DemoSource) -> None:
    engine = create_source_engine(demo_source.url)
    try:
        with snapshot(engine) as conn:
            accounts = read_accounts(conn, [1, 2, 3, 3, 99_999])
            assert read_accounts(conn, []) == {}
    finally:
        engine.dispose()
    assert accounts == {
        1: Account(id=1, role="PARENT", parent_id=None),
        2: Account(id=2, role="ADMIN", parent_id=None),
        3: Account(id=3, role="LEARNER", parent_id=1),
    }
