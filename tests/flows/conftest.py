"""Helpers of the flow tests: run the archive flow on a demo source (against the session's
Prefect server, the `prefect_server` fixture of tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
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


PREFECT = Path(sys.executable).parent / "prefect"
"""The locked Prefect's command, from this environment."""


def run_deployment_on_a_worker(deployment: str, pool: str, env: dict[str, str]) -> None:
    """Schedule a run of `deployment` now, have one real `prefect worker start --run-once`
    process of `pool` (with environment `env`) pick it up, and check that the run completed."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    flow_run = run_deployment(deployment, timeout=0)  # scheduled now
    worker = subprocess.run(
        [str(PREFECT), "worker", "start", "--pool", pool, "--run-once"],
        env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-2000:]
    with get_client(sync_client=True) as client:
        finished = client.read_flow_run(flow_run.id)  # type: ignore[union-attr]
    assert finished.state is not None and finished.state.is_completed(), finished.state
    assert finished.work_pool_name == pool


def only_published_snapshot(url: str) -> str:
    """The run id of the one snapshot published at `url`, after checking it against its
    manifest (`verify`)."""
    from learner_export.verify import verify_snapshot
    from load.destination import open_destination, open_snapshot, published_runs

    (run_id,) = published_runs(open_destination(url))
    fs, directory = open_snapshot(f"{url}/{run_id}")
    assert verify_snapshot(fs, directory, None).problems == []
    return str(run_id)
