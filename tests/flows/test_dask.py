"""Scale-out: the chunk tasks of one run on a Dask cluster made of separate processes started as
commands (`dask scheduler`, two `dask worker`), as on separate machines, writing to S3.

(It replaces the earlier test on a `distributed.LocalCluster` inside the test process: everything
that one showed, this one shows with real processes.)"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from learner_export.processes import free_port, stop_process
from learner_export.verify import verify_snapshot
from load.destination import open_snapshot
from tests.conftest import DemoSource, PrefectServer, S3Destination
from tests.flows.conftest import only_published_snapshot, run_archive, run_deployment_on_a_worker

pytestmark = pytest.mark.slow


DASK = Path(sys.executable).parent / "dask"
CLI = Path(sys.executable).parent / "learner-export"
_EXPORT_DATE = re.compile(rb'"exportDate":"[^"]*"')


def _objects(destination: S3Destination, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix`, by its key relative to it."""
    client, bucket = destination.server.client(), destination.bucket
    return {
        key.removeprefix(prefix): client.get_object(Bucket=bucket, Key=f"learners/{key}")[
            "Body"
        ].read()
        for key in destination.keys(prefix)
    }


def _comparable(name: str, data: bytes) -> bytes:
    """What must be identical between two runs of the same options: a document's bytes with
    its exportDate blanked; manifest.json holds the run's times and is compared by verify."""
    if name.startswith("learner-data-"):
        return _EXPORT_DATE.sub(b'"exportDate":""', data)
    return name.encode()


@contextlib.contextmanager
def _dask_cluster(
    env: dict[str, str],
) -> Iterator[tuple[str, list[subprocess.Popen[bytes]], subprocess.Popen[bytes]]]:
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, started as commands (as on
    separate machines): the address, the workers and the scheduler. The workers run without a
    nanny, so a killed worker stays dead."""
    address = f"tcp://127.0.0.1:{free_port()}"
    common = ["--no-dashboard", "--host", "127.0.0.1"]
    port = address.rsplit(":", 1)[1]
    scheduler = subprocess.Popen(
        [str(DASK), "scheduler", "--port", port, *common], env=env, stderr=subprocess.DEVNULL
    )
    worker = [str(DASK), "worker", address, "--nthreads", "1", "--no-nanny", *common]
    workers = [subprocess.Popen(worker, env=env, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        yield address, workers, scheduler
    finally:
        for process in [*workers, scheduler]:
            stop_process(process)


def test_chunks_run_on_dask_worker_processes_writing_to_s3_and_survive_a_killed_worker(
    sqlite_demo: DemoSource, s3_destination: S3Destination, prefect_server: PrefectServer
) -> None:
    from distributed import Client

    learners = sqlite_demo.rows.learner_ids[:4]
    env = {**os.environ, "PREFECT_API_URL": prefect_server.url, "DATABASE_URL": sqlite_demo.url}
    # The same options both ways; the reference runs in this process, without Dask.
    options = {"run_id": "nightly", "chunk_size": 1, "learners": learners, "parquet": False}
    run_archive(sqlite_demo, f"s3://{s3_destination.bucket}/learners/single", **options)
    command = [
        str(CLI), "archive", "--no-parquet", "--chunk-size", "1", "--run-id", "nightly",
        "--learners", ",".join(map(str, learners)),
        "--dest", f"s3://{s3_destination.bucket}/learners/dask",
    ]  # fmt: skip

    with _dask_cluster(env) as (address, workers, _), Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        pids = client.run(os.getpid)  # worker address -> process id
        run = subprocess.Popen(
            [*command, "--dask-address", address],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        killed = None
        for _ in range(60_000):  # every 5 ms, until a worker holds a chunk after one finished
            if run.poll() is not None:
                break
            if s3_destination.keys("dask/.incomplete/nightly/parts/"):
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    killed = pids[busy[0]]
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.005)
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-2000:]
        assert killed is not None, "the run finished before a worker could be killed"
        assert len(client.scheduler_info()["workers"]) == 1
        assert [w.poll() for w in workers].count(None) == 1

    by_dask = _objects(s3_destination, "dask/nightly/")
    alone = _objects(s3_destination, "single/nightly/")
    assert sorted(by_dask) == sorted(alone)
    assert sum(name.startswith("learner-data-") for name in by_dask) == len(learners)
    for name in alone:
        assert _comparable(name, by_dask[name]) == _comparable(name, alone[name]), name
    fs, directory = open_snapshot(f"{s3_destination.url}/dask/nightly")
    assert verify_snapshot(fs, directory, None).problems == []


def test_a_deployment_with_a_dask_address_runs_its_chunks_on_that_cluster(
    sqlite_demo: DemoSource,
    s3_destination: S3Destination,
    prefect_server: PrefectServer,
    prefect_environment: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`deploy --dask-address`: a real `prefect worker` process picks up the run, and its chunk
    tasks run on the `dask worker` processes (the scheduler's task transitions count them)."""
    from distributed import Client
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from learner_export.cli import main

    def transitions(dask_scheduler: Any) -> int:
        """Task state transitions the scheduler has made so far (run on the scheduler, which
        cannot import this module: a nested function travels by value)."""
        return int(dask_scheduler.transition_counter)

    monkeypatch.setenv("PREFECT_API_URL", prefect_server.url)
    learners = ",".join(map(str, sqlite_demo.rows.learner_ids[:3]))
    env = {**os.environ, "DATABASE_URL": sqlite_demo.url}
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="big-runs", type="process"))
    deploy = ["deploy", "--dest", s3_destination.url, "--learners", learners, "--no-parquet",
              "--chunk-size", "1", "--pool", "big-runs"]  # fmt: skip
    assert main([*deploy, "--dask-address", "tcp://127.0.0.1"]) == 1  # no port: refused
    assert "not a Dask scheduler address (missing port" in capsys.readouterr().err

    with _dask_cluster(env) as (address, _, _), Client(address, timeout=60) as dask:
        dask.wait_for_workers(2, timeout=60)
        assert main([*deploy, "--dask-address", address]) == 0
        out = capsys.readouterr().out
        assert "deployed archive-learners-on-dask/nightly on work pool 'big-runs'" in out
        assert f"chunk tasks on the Dask scheduler at {address}" in out
        before = dask.run_on_scheduler(transitions)
        run_deployment_on_a_worker("archive-learners-on-dask/nightly", "big-runs", env)
        # Three one-learner chunks, each at least released -> waiting -> processing -> memory.
        assert dask.run_on_scheduler(transitions) - before >= 3 * 3

    run_id = only_published_snapshot(s3_destination.url)
    assert len(s3_destination.keys(f"{run_id}/learner-data-")) == 3


def test_a_scheduler_gone_mid_run_ends_it_in_one_line_and_a_rerun_finishes_it(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    """The Dask scheduler killed while chunks run: the command exits 1, its last line says what
    happened and what to do (not a traceback of ours), the finished chunks are kept, and the same
    command on a new cluster finishes the snapshot."""
    from tests.conftest import make_sqlite_demo

    source = make_sqlite_demo(tmp_path / "source.sqlite3", learners=40)
    env = {
        **os.environ, "PREFECT_API_URL": prefect_server.url, "DATABASE_URL": source.url,
        "LEARNER_EXPORT_DATA_DIR": str(tmp_path / "data"),
    }  # fmt: skip
    dest = tmp_path / "dest"
    command = [
        str(CLI), "archive", "--no-parquet", "--chunk-size", "1", "--run-id", "nightly",
        "--dest", str(dest),
    ]  # fmt: skip
    parts = dest / ".incomplete" / "nightly" / "parts"

    def finished() -> set[str]:
        """The part records written so far (not the hidden temporary files of writes)."""
        if not parts.exists():
            return set()
        return {p.name for p in parts.iterdir() if p.suffix == ".json" and p.name[0] != "."}

    with _dask_cluster(env) as (address, _, scheduler), contextlib.ExitStack() as stack:
        run = subprocess.Popen(
            [*command, "--dask-address", address],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        stack.callback(stop_process, run)
        for _ in range(60_000):  # every 5 ms, until two chunks are finished
            if run.poll() is not None or len(finished()) >= 2:
                break
            time.sleep(0.005)
        assert run.poll() is None, "the run ended before the scheduler could be killed"
        scheduler.kill()
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 1
    last = stderr.decode().splitlines()[-1]
    assert last.startswith(f"learner-export: error: the Dask scheduler at {address} stopped ")
    assert "Run the same command again" in last
    kept = finished()
    assert 2 <= len(kept) < 40

    with _dask_cluster(env) as (address, _, _):
        rerun = subprocess.run(
            [*command, "--dask-address", address], env=env, capture_output=True, timeout=300
        )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    documents = sorted(p.name for p in (dest / "nightly").glob("learner-data-*"))
    assert len(documents) == 40
    fs, directory = open_snapshot(str(dest / "nightly"))
    assert verify_snapshot(fs, directory, None).problems == []
