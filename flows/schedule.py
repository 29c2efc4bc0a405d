"""The scheduled archive: a deployment of `archive_learners` on a cron schedule, served by this
process (`prefect.serve`). Scheduled runs read the source URL and keys from the serving process's
settings; the deployment stores only the public options.

Schedules need a Prefect server with its scheduler service: the one at PREFECT_API_URL, or, when
none is configured, a local server started here on 127.0.0.1 for as long as the process serves.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.archive import archive_learners
from flows.options import ArchiveOptions
from flows.server import prefect_api


def build_deployment(options: ArchiveOptions, *, cron: str, name: str) -> RunnerDeployment:
    """The deployment: `archive_learners` with these options, on `cron` (UTC)."""
    deployment = archive_learners.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone="UTC")],
        parameters={"options": options.model_dump(mode="json")},
        description="Nightly archive of every learner: documents, manifest, Parquet tables.",
        tags=["learner-export"],
    )
    assert isinstance(deployment, RunnerDeployment)  # called from sync code: not a coroutine
    return deployment


def serve_deployment(deployment: RunnerDeployment, home: Path) -> None:
    """Serve `deployment` until interrupted, on a local server (with its scheduler) if no
    PREFECT_API_URL is configured."""
    with prefect_api(home, services=True):
        serve(deployment)
