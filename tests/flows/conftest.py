"""Helpers of the flow tests: run the archive flow on a demo source (against the session's
Prefect server, the `prefect_server` fixture of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.archive import archive_learners
from flows.options import ArchiveOptions, ArchiveSecrets
from flows.summary import ArchiveResult
from tests.conftest import DemoSource


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
