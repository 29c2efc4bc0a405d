"""The scheduled archive: a deployment of `archive_learners` on a cron schedule, served by this
process (`build_deployment`, `serve_deployment`), or registered on a work pool whose workers run
it (`register_deployment`). Scheduled runs read the source URL and keys from the settings of the
process that runs them; the deployment stores only the public options.

Schedules need a Prefect server with its scheduler service: the one at PREFECT_API_URL, or, when
none is configured, a local server started here on 127.0.0.1 for as long as the process serves.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from pathlib import Path
from types import FrameType

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.runner import Runner
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.archive import archive_learners, archive_learners_on_dask
from flows.dask_runner import check_address
from flows.errors import OptionUnavailable
from flows.interrupt import STOP
from flows.options import ArchiveOptions
from flows.server import prefect_api
from flows.summary import ArchiveResult


def build_deployment(
    options: ArchiveOptions,
    *,
    cron: str,
    name: str,
    entrypoint_type: EntrypointType = EntrypointType.FILE_PATH,
    concurrency_limit: int | None = None,
    dask_address: str | None = None,
) -> RunnerDeployment:
    """The deployment: `archive_learners` with these options, on `cron` (UTC), at most
    `concurrency_limit` runs at once (None: no limit on the server; see `serve_deployment`);
    with `dask_address`, `archive_learners_on_dask`, whose chunk tasks run on that Dask
    scheduler's workers (the address is a public parameter, like the options)."""
    parameters: dict[str, object] = {"options": options.model_dump(mode="json")}
    flow: Flow[..., ArchiveResult] = archive_learners
    if dask_address is not None:
        check_address(dask_address)
        parameters["dask_address"] = dask_address
        flow = archive_learners_on_dask
    deployment = flow.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone="UTC")],
        parameters=parameters,
        description="Nightly archive of every learner: documents, manifest, Parquet tables.",
        tags=["learner-export"],
        entrypoint_type=entrypoint_type,
        concurrency_limit=concurrency_limit,
    )
    assert isinstance(deployment, RunnerDeployment)  # called from sync code: not a coroutine
    return deployment


def register_deployment(
    options: ArchiveOptions, *, cron: str, name: str, pool: str, dask_address: str | None = None
) -> str:
    """Register the deployment on the work pool `pool` of the Prefect server at PREFECT_API_URL;
    returns its name (`archive-learners/<name>`, or `archive-learners-on-dask/<name>` with
    `dask_address`). Registering it again updates it. The scheduler is not contacted here (the
    machine that deploys may not reach the cluster): each run checks it before it starts.

    Its entrypoint is the module path `flows.archive.archive_learners` (or
    `flows.archive.archive_learners_on_dask`): a worker imports the installed package (`pip
    install learner-export`), nothing is pulled from storage, so every worker machine runs the
    version installed on it. A pool that does not exist is refused.

    One run at a time, across all the pool's workers (a concurrency limit of 1 kept by the
    server; a run that comes while another goes waits for it): an object store has no run lock
    (`load.run_lock`), so two workers must never write the same date's run at once.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise OptionUnavailable(
            "deploy needs the Prefect server its workers poll: set PREFECT_API_URL"
        )
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise OptionUnavailable(
                f"no work pool {pool!r} on the Prefect server: create it with "
                f"`prefect work-pool create {pool} --type process`"
            ) from None
    deployment = build_deployment(
        options,
        cron=cron,
        name=name,
        entrypoint_type=EntrypointType.MODULE_PATH,
        concurrency_limit=1,
        dask_address=dask_address,
    )
    deployment.apply(work_pool_name=pool)
    return f"{deployment.flow_name}/{name}"


def serve_deployment(deployment: RunnerDeployment, home: Path) -> None:
    """Serve `deployment` until SIGINT or SIGTERM, on a local server (with its scheduler) if no
    PREFECT_API_URL is configured; returns once stopped.

    One run at a time (`limit=1`): a firing that comes while the previous run still goes waits
    for it, rather than writing the same snapshot at once. Ctrl-C stops the runner the way it
    stops on SIGTERM: it cancels a run in flight (whose snapshot the next run of the same id
    resumes) and returns, instead of a KeyboardInterrupt tearing its event loop apart.
    """
    with prefect_api(home, services=True):
        runner = Runner(limit=1)  # made here: it binds to the API configured now
        runner.add_deployment(deployment)
        # The runner handles SIGTERM itself once started; Ctrl-C gets the same graceful stop.
        signal.signal(signal.SIGINT, functools.partial(_graceful_stop, runner))
        asyncio.run(runner.start())


def _graceful_stop(runner: Runner, signum: int, frame: FrameType | None) -> None:
    STOP.set()
    if not runner.started:  # not serving yet: nothing to stop gracefully
        raise KeyboardInterrupt
    runner.handle_sigterm()
