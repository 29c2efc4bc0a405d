"""Resumability: kill -9 a real `learner-export archive` at random moments, run it again, and
get the same documents as an uninterrupted run, with no stray files."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from learner_export.verify import verify_snapshot
from load.destination import open_snapshot
from tests.conftest import DemoSource, make_postgres_demo, make_sqlite_demo
from tests.flows.conftest import PrefectServer

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).parent / "learner-export"
KILLS = 5
LEARNERS = 60
CHUNKS = 30  # --chunk-size 2
SEED = int(os.environ.get("KILL_TEST_SEED", "20261127"))


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
    return len(list((dest / ".incomplete" / "nightly" / "parts").glob("*.json")))


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
    started = time.monotonic()
    reference = subprocess.run(
        _command(tmp_path / "ref"), env=env, capture_output=True, timeout=300
    )
    duration = time.monotonic() - started
    assert reference.returncode == 0, reference.stderr[-2000:]

    rng = random.Random(SEED)
    dest = tmp_path / "dest"
    stages = []
    for _ in range(KILLS):
        process = subprocess.Popen(
            _command(dest), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the kill takes everything it started
        )  # fmt: skip
        # A random moment of the writing phase: once a random number of chunks are recorded
        # finished (counting those of earlier attempts), then a random instant later.
        target = rng.randrange(CHUNKS + 1)
        deadline = time.monotonic() + duration * 3
        while _parts(dest) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.2))
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
