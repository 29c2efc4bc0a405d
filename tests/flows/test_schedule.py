from __future__ import annotations

import os

import orjson
import pytest

from flows.options import ArchiveOptions
from flows.schedule import build_deployment
from learner_export.cli import main
from tests.conftest import DemoSource, PrefectServer, S3Destination
from tests.flows.conftest import only_published_snapshot, run_deployment_on_a_worker


def test_the_deployment_runs_nightly_with_public_options_only() -> None:
    options = ArchiveOptions(dest="s3://bucket/archive", compress="zstd", keep=30)
    deployment = build_deployment(options, cron="0 2 * * *", name="nightly")
    assert deployment.name == "nightly"
    assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
        ("0 2 * * *", "UTC")
    ]  # type: ignore[union-attr]
    assert deployment.parameters == {"options": options.model_dump(mode="json")}
    # The source and the keys are read by each scheduled run from its settings, never stored.
    stored = orjson.dumps(deployment.parameters)
    assert b"secrets" not in stored and b"postgresql" not in stored


@pytest.mark.slow
def test_a_deployment_on_a_work_pool_is_run_by_a_prefect_worker_process(
    sqlite_demo: DemoSource,
    s3_destination: S3Destination,
    prefect_server: PrefectServer,
    prefect_environment: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`learner-export deploy` registers the archive on a process work pool; a real `prefect
    worker start` process picks up its scheduled run and archives to S3 with the source and
    storage credentials of its own environment (none of them is in the deployment)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    monkeypatch.setenv("PREFECT_API_URL", prefect_server.url)
    learners = ",".join(map(str, sqlite_demo.rows.learner_ids[:2]))
    deploy = ["deploy", "--dest", s3_destination.url, "--learners", learners, "--no-parquet"]
    assert main([*deploy, "--pool", "archive"]) == 1  # no such pool yet: refused in one line
    assert "prefect work-pool create archive --type process" in capsys.readouterr().err
    with get_client(sync_client=True) as client:  # what `prefect work-pool create` does
        client.create_work_pool(WorkPoolCreate(name="archive", type="process"))
    assert main([*deploy, "--pool", "archive", "--name", "nightly"]) == 0
    assert "deployed archive-learners/nightly on work pool 'archive'" in capsys.readouterr().out
    with get_client(sync_client=True) as client:  # one run at a time across the pool's workers
        limit = client.read_deployment_by_name("archive-learners/nightly").global_concurrency_limit
    assert limit is not None and limit.limit == 1

    env = {**os.environ, "DATABASE_URL": sqlite_demo.url}
    run_deployment_on_a_worker("archive-learners/nightly", "archive", env)
    run_id = only_published_snapshot(s3_destination.url)
    assert len(s3_destination.keys(f"{run_id}/learner-data-")) == 2
