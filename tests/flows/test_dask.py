"""Scale-out: the chunk tasks of one run on a Dask cluster of two worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from learner_export.verify import verify_snapshot
from load.destination import open_snapshot
from tests.conftest import DemoSource, PrefectServer
from tests.flows.conftest import run_archive

pytestmark = pytest.mark.slow


def test_chunk_tasks_run_on_a_local_dask_cluster(
    sqlite_demo: DemoSource, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    from distributed import LocalCluster
    from prefect_dask.task_runners import DaskTaskRunner

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        result = run_archive(
            sqlite_demo,
            tmp_path,
            run_id="dask",
            chunk_size=3,
            task_runner=DaskTaskRunner(address=cluster.scheduler_address),
        )
        # The scheduler's record of what its worker processes computed.
        prefix = cluster.scheduler.task_prefixes.get("archive_chunk_task")
        computed = 0.0 if prefix is None else prefix.all_durations.get("compute", 0.0)
        workers = len(cluster.scheduler.workers)
    assert result.chunks_run == 4
    assert result.counts.files == len(sqlite_demo.rows.learner_ids)
    assert computed > 0
    assert workers == 2
    fs, directory = open_snapshot(str(tmp_path / "dask"))
    assert verify_snapshot(fs, directory, None).problems == []
