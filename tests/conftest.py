"""Suite-wide fixtures: isolated settings, demo databases on SQLite and on a real PostgreSQL, the
restore tests' documents and targets, and one local Prefect server for the session.

PostgreSQL tests skip, saying why, where no server binaries exist; with
LEARNER_EXPORT_REQUIRE_POSTGRES=1 (set by .ci/run) that skip becomes a failure.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from learner_export.demo import DemoRows, build_demo_database
from learner_export.settings import get_settings
from tests.pg import PostgresCluster, PostgresUnavailable
from tests.restore_helpers import export_all
from tests.s3 import S3Server, S3Unavailable

REQUIRE_POSTGRES = os.environ.get("LEARNER_EXPORT_REQUIRE_POSTGRES") == "1"
DEMO_LEARNERS = 12
DEMO_SEED = 7

_SETTINGS_VARIABLES = ("DATABASE_URL", "JWT_SECRET", "XDG_DATA_HOME")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/ from the current code (review the diff before committing)",
    )


@pytest.fixture(autouse=True)
def isolated_settings(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test sees a fresh settings object whose data dir is its own, and no stray env."""
    data_dir = tmp_path_factory.mktemp("data")
    for name in list(os.environ):
        if name.startswith("LEARNER_EXPORT_") and name != "LEARNER_EXPORT_REQUIRE_POSTGRES":
            monkeypatch.delenv(name)
    for name in _SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEARNER_EXPORT_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """The suite's PostgreSQL server, started once, removed at the end."""
    try:
        cluster = PostgresCluster()
        cluster.start()
    except PostgresUnavailable as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required here (LEARNER_EXPORT_REQUIRE_POSTGRES=1): {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@dataclass(frozen=True)
class DemoSource:
    """A demo database: `url` reads it with least privilege, `owner_url` may write."""

    kind: str
    url: str
    owner_url: str
    rows: DemoRows


def make_sqlite_demo(
    path: Path, *, learners: int = DEMO_LEARNERS, seed: int = DEMO_SEED
) -> DemoSource:
    url = f"sqlite:///{path}"
    rows = build_demo_database(url, learners=learners, seed=seed, replace=True)
    return DemoSource("sqlite", url, url, rows)


def make_postgres_demo(
    cluster: PostgresCluster, name: str, *, learners: int = DEMO_LEARNERS, seed: int = DEMO_SEED
) -> DemoSource:
    owner_url = cluster.create_database(name)
    rows = build_demo_database(owner_url, learners=learners, seed=seed, replace=False)
    return DemoSource("postgresql", cluster.grant_reader(name), owner_url, rows)


@pytest.fixture(scope="session")
def sqlite_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSource:
    return make_sqlite_demo(tmp_path_factory.mktemp("sqlite-demo") / "demo.sqlite3")


@pytest.fixture(scope="session")
def postgres_demo(pg_cluster: PostgresCluster) -> DemoSource:
    return make_postgres_demo(pg_cluster, "demo")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def demo_source(request: pytest.FixtureRequest) -> DemoSource:
    """The default demo database, once on SQLite and once on PostgreSQL (read-only role)."""
    fixture = "sqlite_demo" if request.param == "sqlite" else "postgres_demo"
    source: DemoSource = request.getfixturevalue(fixture)
    return source


@pytest.fixture(scope="session")
def report_snapshot(sqlite_demo: DemoSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SQLite demo archived with Parquet and `--report` (three chunks), by the archive's
    recipe without Prefect: the analyst report's tests read it, never change it."""
    from tests.analyst import write_snapshot

    root = tmp_path_factory.mktemp("report-snapshot")
    return write_snapshot(sqlite_demo, root, "2026-03-02", report=True)


# --- restore: the demo learners' documents and fresh target databases -------------------------

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


# --- Prefect: one local server for the session --------------------------------------------------


@dataclass(frozen=True)
class PrefectServer:
    """The session's Prefect API (`url`); its home (database, logs) and Prefect's local result
    storage are temporary directories, so a test can search them."""

    url: str
    home: Path
    storage: Path


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """`flows.server.local_server`, the server the CLI starts when no PREFECT_API_URL is
    configured, so flows run the way users run them. Prefect is imported only by the tests that
    ask for it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from flows.server import drain_prefect_queues, local_server

    base = tmp_path_factory.mktemp("prefect")
    home, storage = base / "home", base / "storage"
    with (
        local_server(home) as url,
        temporary_settings(updates={PREFECT_API_URL: url, PREFECT_LOCAL_STORAGE_PATH: storage}),
    ):
        yield PrefectServer(url=url, home=home, storage=storage)
        drain_prefect_queues()


@pytest.fixture(scope="session")
def prefect_backend(prefect_server: PrefectServer) -> PrefectServer:
    """The Prefect API the restore flow tests run against: the session's one server."""
    return prefect_server


@pytest.fixture
def prefect_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The commands set Prefect's variables where unset; set them here so they are undone."""
    for name, value in {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, os.environ.get(name, value))


def use_source(source: DemoSource, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Make `source` the commands' database (DATABASE_URL), with these other variables set."""
    monkeypatch.setenv("DATABASE_URL", source.url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault matrix's table (tests/flows/test_archive_steps.py), when it ran."""
    matrix = sys.modules.get("tests.flows.test_archive_steps")
    tally = getattr(matrix, "FAULT_TALLY", None)
    if not tally:
        return
    terminalreporter.section("fault matrix: faults injected into archive runs, then rerun")
    terminalreporter.write_line(
        "| fault | injected | recovered | lost | duplicated | documents identical |"
    )
    terminalreporter.write_line("|---|---|---|---|---|---|")
    total = [0, 0, 0, 0, 0]
    for family, t in sorted(tally.items()):
        row = [t.injected, t.recovered, t.lost, t.duplicated, t.identical]
        total = [a + b for a, b in zip(total, row, strict=True)]
        terminalreporter.write_line(f"| {family} | " + " | ".join(map(str, row)) + " |")
    terminalreporter.write_line("| **all** | " + " | ".join(map(str, total)) + " |")


# --- S3: one moto server for the session ----------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The suite's S3 API (moto's standalone server), started once, stopped at the end."""
    try:
        server = S3Server()
        server.start()
    except S3Unavailable as exc:
        pytest.fail(f"the S3 tests need moto's server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class S3Destination:
    """A new bucket on the suite's S3 server, and the destination URL of a prefix in it."""

    server: S3Server
    bucket: str
    url: str

    def keys(self, prefix: str = "") -> list[str]:
        """Object keys under the destination's prefix (relative to it), as a reader lists them."""
        root = self.url.removeprefix(f"s3://{self.bucket}/").rstrip("/") + "/"
        return [k.removeprefix(root) for k in self.server.keys(self.bucket, root + prefix)]


@pytest.fixture
def s3_destination(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Destination:
    """`s3://<new bucket>/learners`, with the server's standard AWS variables set in this process
    (and so in the commands it starts): the endpoint and keys never appear in the URL."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    return S3Destination(s3_server, bucket, f"s3://{bucket}/learners")
