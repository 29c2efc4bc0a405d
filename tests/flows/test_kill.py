"""Resumability: kill -9 a real `learner-export archive` at random moments, run it again, and
get the same documents as an uninterrupted run, with no stray files.

A moment is a state of the run's directory, not a time: once a random number of chunks are
recorded finished, and then a random number of further files have been written. So a slow
machine kills at the same points as a fast one."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import psutil
import pytest

from learner_export.verify import verify_snapshot
from load.destination import open_snapshot
from tests.conftest import DemoSource, PrefectServer, make_postgres_demo, make_sqlite_demo

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).parent / "learner-export"
KILLS = 5
LEARNERS = 60
CHUNKS = 30  # --chunk-size 2
SEED = int(os.environ.get("KILL_TEST_SEED", "20261127"))
POLLS = 60_000
"""How often a kill waits for its moment, every 5 ms: only a run that hangs exhausts it."""


def _command(dest: Path) -> list[str]:
    return [
        str(CLI), "archive", "--no-parquet", "--chunk-size", "2", "--workers", "2",
        "--compress", "gzip", "--run-id", "nightly", "--dest", str(dest),
    ]  # fmt: skip


def _documents(snapshot: Path) -> dict[str, object]:
    """Each document decoded, exportDate set aside (it is the run's start time)."""
    from load.codec import decode_stored

    documents = {}
    for path in snapshot.glob("learner-data-*"):
        document = orjson.loads(decode_stored(path.name, path.read_bytes()))
        document.pop("exportDate")
        documents[path.name.split("-20")[0]] = document
    return documents


def _parts(dest: Path) -> int:
    """Chunks recorded finished so far (part records survive a kill)."""
    try:
        return sum(
            p.suffix == ".json" for p in (dest / ".incomplete" / "nightly" / "parts").iterdir()
        )
    except FileNotFoundError:  # not started yet, or published
        return 0


def _written(dest: Path) -> int:
    """Files in the run's directory: documents, temporary files of writes under way, records.
    (os.walk passes over a directory that goes away while it looks.)"""
    return sum(len(files) for _, _, files in os.walk(dest / ".incomplete" / "nightly"))


def _wait_for(process: subprocess.Popen[bytes], count: Callable[[], int], at_least: int) -> None:
    """Return once `count()` is at least `at_least` or the process has exited; fail if it does
    neither (a hung run)."""
    for _ in range(POLLS):
        if count() >= at_least or process.poll() is not None:
            return
        time.sleep(0.005)
    pytest.fail(f"the archive neither got to {at_least} nor exited")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def kill_source(request: pytest.FixtureRequest, tmp_path: Path) -> DemoSource:
    if request.param == "sqlite":
        return make_sqlite_demo(tmp_path / "kill.sqlite3", learners=LEARNERS)
    return make_postgres_demo(request.getfixturevalue("pg_cluster"), "kill", learners=LEARNERS)


def test_killed_runs_finish_with_the_same_documents(
    kill_source: DemoSource, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    source = kill_source
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server.url,
        "DATABASE_URL": source.url,
        "LEARNER_EXPORT_DATA_DIR": str(tmp_path / "data"),
    }
    reference = subprocess.run(
        _command(tmp_path / "ref"), env=env, capture_output=True, timeout=300
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    rng = random.Random(SEED)
    dest = tmp_path / "dest"
    stages = []
    for _ in range(KILLS):
        process = subprocess.Popen(
            _command(dest), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the kill takes everything it started
        )  # fmt: skip
        # Chunks counted finished include those of earlier attempts; the further files land in
        # the middle of the next chunks' writes.
        target, further = rng.randrange(CHUNKS + 1), rng.randrange(3)
        _wait_for(process, functools.partial(_parts, dest), target)
        _wait_for(process, functools.partial(_written, dest), _written(dest) + further)
        with contextlib.suppress(ProcessLookupError):  # a run that finished has no group left
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        stages.append(_parts(dest))
    assert any(0 < done < CHUNKS for done in stages), stages  # some kills hit mid-run
    final = subprocess.run(_command(dest), env=env, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]

    assert _documents(dest / "nightly") == _documents(tmp_path / "ref" / "nightly")
    assert len(_documents(dest / "nightly")) == LEARNERS
    assert _files(dest) == _files(tmp_path / "ref")  # no partial, temporary or duplicate file
    fs, directory = open_snapshot(str(dest / "nightly"))
    assert verify_snapshot(fs, directory, None).problems == []
    again = subprocess.run(_command(dest), env=env, capture_output=True, timeout=300)
    assert b"already-complete" in again.stdout


def _local_server(process: subprocess.Popen[bytes]) -> psutil.Process | None:
    """The command's local Prefect server, once it has started one."""
    for child in psutil.Process(process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "flows.server" in child.cmdline():
                return child
    return None


def _own_server_env(source: DemoSource, tmp_path: Path) -> dict[str, str]:
    """The environment of a command that starts its own local Prefect server (no API URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(DATABASE_URL=source.url, LEARNER_EXPORT_DATA_DIR=str(tmp_path / "data"))
    return env


def _two_chunks_in(
    dest: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], psutil.Process]:
    """The archive command (one worker thread, its own process group) once two of its chunks
    are finished, and the local Prefect server it started."""
    process = subprocess.Popen(
        [*_command(dest), "--workers", "1"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    _wait_for(process, functools.partial(_parts, dest), 2)
    server = _local_server(process)
    assert server is not None and process.poll() is None, "the run ended before the signal"
    return process, server


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_a_stopped_run_resumes_and_takes_its_local_server_with_it(
    stop: str, sqlite_kill_source: DemoSource, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and SIGTERM end a run
    mid-way with status 130 and one line; SIGKILL ends it at once. The command's own local Prefect
    server is never left running, and the same command then finishes the same snapshot."""
    env, dest = _own_server_env(sqlite_kill_source, tmp_path), tmp_path / "dest"
    process, server = _two_chunks_in(dest, env)
    signum = getattr(signal, stop)
    if stop == "SIGKILL":
        os.kill(process.pid, signum)  # the command alone: its server must notice by itself
    else:
        os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=60)
    server.wait(timeout=60)  # raises if the server outlives its command
    if stop == "SIGKILL":
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 130
        assert stderr.decode().splitlines()[-1] == (
            "learner-export: interrupted; run the same command again to resume"
        )
        assert b"Traceback" not in stderr
    assert 0 < _parts(dest) < CHUNKS  # stopped mid-run

    env["PREFECT_API_URL"] = prefect_server.url
    final = subprocess.run(_command(dest), env=env, capture_output=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert len(_documents(dest / "nightly")) == LEARNERS
    assert not (dest / ".incomplete").exists()
    fs, directory = open_snapshot(str(dest / "nightly"))
    assert verify_snapshot(fs, directory, None).problems == []


@pytest.fixture(scope="module")
def sqlite_kill_source(tmp_path_factory: pytest.TempPathFactory) -> DemoSource:
    return make_sqlite_demo(tmp_path_factory.mktemp("kill") / "kill.sqlite3", learners=LEARNERS)


def test_sigterm_stops_the_chunks_while_prefect_reports_the_crash(
    sqlite_kill_source: DemoSource, tmp_path: Path
) -> None:
    """Prefect's flow engine handles SIGTERM itself first: it reports the run crashed, then passes
    the signal on. With the command's own server paused, that report hangs; the chunks must still
    stop at once (STOP set before Prefect's handler), not go on to the end of the run."""
    dest = tmp_path / "dest"
    process, server = _two_chunks_in(dest, _own_server_env(sqlite_kill_source, tmp_path))
    try:
        server.suspend()  # the crash report cannot get through while it is paused
        try:
            process.send_signal(signal.SIGTERM)
            stopped_at = _parts(dest)
            time.sleep(3)  # long enough for the rest of the chunks, had they gone on
            assert _parts(dest) <= stopped_at + 1 < CHUNKS  # at most the chunk under way
        finally:
            server.resume()
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 130, stderr.decode()[-2000:]
        server.wait(timeout=60)  # raises if the server outlives its command
    finally:
        if process.returncode is None:  # a failed check above: take everything down
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
