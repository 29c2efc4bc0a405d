"""Fixtures of the restore tests: the demo learners' documents and fresh target databases."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from learner_export.settings import get_settings
from tests.conftest import DemoSource
from tests.load.restore_helpers import export_all

_database_numbers = itertools.count(1)

NewTarget = Callable[[str], str]


@pytest.fixture(scope="session")
def sqlite_exports(sqlite_demo: DemoSource) -> dict[int, bytes]:
    """Every demo learner's document, exported from the SQLite demo."""
    return export_all(sqlite_demo.url)


@pytest.fixture(scope="session")
def postgresql_exports(postgres_demo: DemoSource) -> dict[int, bytes]:
    """Every demo learner's document, exported from the PostgreSQL demo (read-only role)."""
    return export_all(postgres_demo.url)


@pytest.fixture
def new_target(request: pytest.FixtureRequest, tmp_path: Path) -> NewTarget:
    """Make a new, empty target database of a kind ("sqlite" or "postgresql"); its URL."""

    def make(kind: str) -> str:
        number = next(_database_numbers)
        if kind == "sqlite":
            return f"sqlite:///{tmp_path / f'target-{number}.sqlite3'}"
        cluster = request.getfixturevalue("pg_cluster")
        url: str = cluster.create_database(f"restore_target_{number}")
        return url

    return make


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def target_url(request: pytest.FixtureRequest, new_target: NewTarget) -> str:
    """A new, empty target database, once SQLite and once PostgreSQL."""
    return new_target(request.param)


@pytest.fixture
def fernet_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A fresh Fernet key, configured as the settings' encryption key."""
    key = Fernet.generate_key()
    monkeypatch.setenv("LEARNER_EXPORT_ENCRYPTION_KEY", key.decode())
    get_settings.cache_clear()
    return key
