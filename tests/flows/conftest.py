"""Fixtures of the flow tests: one local Prefect server for the session, and a helper that runs
the archive flow on a demo source.

The server is `flows.server.local_server`, the one the CLI starts when no PREFECT_API_URL is
configured, so the tests run flows the way users do. Its home (database, logs) and Prefect's
local result storage are in a temporary directory, so a test can search them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from flows.archive import archive_learners
from flows.options import ArchiveOptions, ArchiveSecrets
from flows.server import drain_prefect_queues, local_server
from flows.summary import ArchiveResult
from tests.conftest import DemoSource


@dataclass(frozen=True)
class PrefectServer:
    url: str
    home: Path
    storage: Path


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
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


def run_archive(
    source: DemoSource,
    dest: str | Path,
    *,
    secrets: dict[str, Any] | None = None,
    task_runner: Any = None,
    **options: Any,
) -> ArchiveResult:
    """Run the archive flow on `source` into `dest` (documents only unless parquet=True)."""
    options.setdefault("parquet", False)
    flow = (
        archive_learners
        if task_runner is None
        else archive_learners.with_options(task_runner=task_runner)
    )
    result: ArchiveResult = flow(
        options=ArchiveOptions(dest=str(dest), **options),
        secrets=ArchiveSecrets(source_url=source.url, **(secrets or {})),
    )
    return result
