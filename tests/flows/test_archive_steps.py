"""The fault matrix: an archive run broken at every file system call, then run again.

The run is `flows.archive_steps.archive_run`, the recipe the Prefect flow runs, with its plain
steps. A clean run counts the file system calls under the destination and the audit log, by
kind; then, for every N, the Nth call of each kind fails (ENOSPC, EIO) or the process "dies" just
before the Nth call that changes the disk (`tests.faultinject`). After each fault the same run is
made again, and must give exactly the uninterrupted run's documents (byte for byte: both runs
share one export time), Parquet rows and manifest, one audit line per learner, and no file
outside the published snapshot. The database faults (a connection terminated at each learner
boundary, the server restarted mid-run) and schema drift between runs close the matrix.

Every fault is tallied in `FAULT_TALLY`; the session's summary prints the table (see
tests/conftest.py) and the README carries it.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import shutil
import subprocess
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from extract.errors import TerminalExtractError
from flows import archive_steps
from flows.chunk import ChunkJob
from flows.errors import ArchiveError
from flows.options import ArchiveOptions, run_parameters
from load.audit import read_audit
from load.errors import LoadError
from tests.conftest import DemoSource, make_postgres_demo, make_sqlite_demo
from tests.faultinject import ERRNOS, ERROR_KINDS, Faults, Killed
from tests.pg import PostgresCluster

pytestmark = [
    # A simulated kill cuts clean-up short, leaving file objects for the collector to find; a
    # real kill -9 leaves no process to warn about them.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

DEMO_LEARNERS = 4
ARCHIVED = [3, 7]
"""Two of the demo's learners, one chunk: every kind of file the run writes (documents, every
Parquet table, the data dictionary, part record, plan, manifest, audit lines) at the least cost
per run, since the matrix makes about a thousand runs. Resuming across chunks is
tests/flows/test_kill.py's (a real command, 30 chunks)."""
CHUNK_SIZE = 2
STRIDE = 4
"""Where a fault family repeats what another already proves, it takes every STRIDE-th N: EIO
follows ENOSPC's code path (both are terminal OS errors), and PostgreSQL's file system calls are
SQLite's (the kills at every N run on SQLite)."""
NOW = datetime(2026, 11, 30, 2, 0, 0, 123000, tzinfo=UTC)
KEY = "fault-matrix-pseudonym-key"


@dataclass
class Tally:
    """Faults of one family: injected, and how the rerun came out."""

    injected: int = 0
    recovered: int = 0
    lost: int = 0
    duplicated: int = 0
    identical: int = 0


FAULT_TALLY: dict[str, Tally] = {}
"""Family ("kill -9 / sqlite", ...) -> its tally; printed at the end of the session."""


def _run(source: DemoSource, dest: Path, audit: Path) -> archive_steps.RunOutcome:
    options = ArchiveOptions(
        dest=str(dest), run_id="night", learners=ARCHIVED, chunk_size=CHUNK_SIZE, parquet=True
    )
    job = ChunkJob(
        destination_url=str(dest), run_id="night", source_url=source.url, export_date=NOW,
        exported_by=None, compress=None, encryption_key=None, parquet=True, pseudonym_key=KEY,
    )  # fmt: skip
    return archive_steps.archive_run(
        job, run_parameters(options), now=NOW, tolerate_failures=False, audit_log=str(audit),
        keep=None, log=logging.getLogger("fault-matrix"),
    )  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What a finished run left, apart from timings: compared between runs."""

    documents: dict[str, bytes]
    parquet: dict[str, list[dict[str, Any]]]
    manifest: dict[str, Any]
    files: list[str]
    audit: list[int]


_TIMINGS = {"finished_at", "duration_seconds", "seconds"}


def _outcome(dest: Path, audit: Path) -> Outcome:
    snapshot = dest / "night"
    manifest = orjson.loads((snapshot / "manifest.json").read_bytes())
    for key in _TIMINGS:
        manifest.pop(key, None)
    parquet = {
        table.name: sorted(
            (pq.read_table(part).to_pylist() for part in sorted(table.glob("*.parquet"))),
            key=repr,
        )
        for table in sorted((snapshot / "parquet").iterdir())
    }
    lines = [r for r in read_audit(audit) if r.get("runId") == "night"]
    return Outcome(
        documents={p.name: p.read_bytes() for p in sorted(snapshot.glob("learner-data-*"))},
        parquet={name: [row for part in parts for row in part] for name, parts in parquet.items()},
        manifest=manifest,
        files=sorted(str(p.relative_to(dest)) for p in dest.rglob("*")),
        audit=sorted(r["learnerId"] for r in lines),
    )


class Matrix:
    """One source: its reference outcome, and the rerun check after each fault."""

    def __init__(self, source: DemoSource, base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.source, self.base, self.monkeypatch = source, base, monkeypatch
        self.faults = Faults([base])
        self.runs = 0
        dest, audit = self._fresh()
        _run(source, dest, audit)  # makes `base` too: the runs counted below do not
        self.reference = _outcome(dest, audit)
        counted, counted_audit = self._fresh()
        with self.faults.installed(monkeypatch):
            _run(source, counted, counted_audit)
            self.clean_counts = dict(self.faults.counts)
            self.clean_mutations = self.faults.mutations
        assert len(self.reference.documents) == len(ARCHIVED)
        assert self.reference.audit == sorted(
            int(n.split("-")[2]) for n in self.reference.documents
        )

    def _fresh(self) -> tuple[Path, Path]:
        self.runs += 1
        run_dir = self.base / f"run-{self.runs}"
        return run_dir / "dest", run_dir / "data" / "audit.jsonl"

    def check(
        self,
        family: str,
        arm: Callable[[Faults], None],
        before_rerun: Callable[[], None] = lambda: None,
    ) -> None:
        """Run with the fault armed, then again without: the rerun must match the reference."""
        tally = FAULT_TALLY.setdefault(family, Tally())
        dest, audit = self._fresh()
        with self.faults.installed(self.monkeypatch):
            arm(self.faults)
            # The fault stops the run, as it would stop a real one (or the run absorbs it).
            with contextlib.suppress(
                Killed, LoadError, ArchiveError, TerminalExtractError, OSError
            ):
                _run(self.source, dest, audit)
            fired = self.faults.fired
            _forget_the_dead()
        tally.injected += fired
        before_rerun()
        _run(self.source, dest, audit)
        got = _outcome(dest, audit)
        assert got.files == self.reference.files, family  # nothing stray, nothing missing
        assert got.documents == self.reference.documents, family
        assert got.parquet == self.reference.parquet, family
        assert got.manifest == self.reference.manifest, family
        missing = set(self.reference.audit) - set(got.audit)
        doubled = len(got.audit) - len(set(got.audit))
        assert (missing, doubled) == (set(), 0), family
        if fired:
            tally.recovered += 1
            tally.identical += 1
        tally.lost += len(missing)
        tally.duplicated += doubled


def _forget_the_dead() -> None:
    """Collect what a simulated kill left open (the file objects of writers whose clean-up the
    kill cut short); a real kill -9 leaves nothing of the process to warn about them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def matrix(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Matrix:
    if request.param == "sqlite":
        source = make_sqlite_demo(tmp_path / "faults.sqlite3", learners=DEMO_LEARNERS)
    else:
        source = make_postgres_demo(
            request.getfixturevalue("pg_cluster"), "faults", learners=DEMO_LEARNERS
        )
    return Matrix(source, tmp_path / "runs", monkeypatch)


def test_a_kill_before_any_write_is_recovered_exactly(matrix: Matrix) -> None:
    """kill -9 before each call that changes the disk, and after the last one: every commit
    point of a chunk (temporary write, flush, fsync, rename, directory fsync, part record) and
    of the end (manifest, audit append, publish rename, lock removal)."""
    family = f"kill -9 at each commit point / {matrix.source.kind}"
    stride = 1 if matrix.source.kind == "sqlite" else STRIDE
    points = range(1, matrix.clean_mutations + 2, stride)
    for n in points:
        matrix.check(family, lambda faults, n=n: faults.arm_kill(n))  # type: ignore[misc]
    # A point past the run's last call (the "after the last one" case) has nothing to break.
    assert FAULT_TALLY[family].injected == sum(n <= matrix.clean_mutations for n in points)


@pytest.mark.parametrize("code", sorted(ERRNOS))
def test_a_disk_error_at_any_call_is_recovered_exactly(
    sqlite_source: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """ENOSPC at the Nth write, flush, fsync, rename and close, for every N; EIO at every
    STRIDE-th (the same code path). The file
    system calls do not depend on the database, so this runs on SQLite only (PostgreSQL has the
    kills and its own faults)."""
    matrix = Matrix(sqlite_source, tmp_path / "runs", monkeypatch)
    family = f"{code} at write/flush/fsync/rename/close / sqlite"
    stride = 1 if code == "ENOSPC" else STRIDE
    expected = 0
    for kind in ERROR_KINDS:
        points = range(1, matrix.clean_counts.get(kind, 0) + 1, stride)
        expected += len(points)
        for n in points:
            matrix.check(
                family,
                lambda faults, kind=kind, n=n: faults.arm_error(kind, n, ERRNOS[code]),  # type: ignore[misc]
            )
    assert FAULT_TALLY[family].injected == expected > 0


# --- the database, the destination itself, and the source's schema --------------------------


def _at_learner(monkeypatch: pytest.MonkeyPatch, n: int, action: Callable[[], None]) -> None:
    """Do `action` when the run reaches the boundary before its Nth learner (the chunk loop
    checks for a stop there, between two learners' rows)."""
    import flows.chunk

    seen = {"learners": 0}
    real = flows.chunk.check_not_stopping

    def boundary(index: int) -> None:
        seen["learners"] += 1
        if seen["learners"] == n:
            action()
        real(index)

    monkeypatch.setattr(flows.chunk, "check_not_stopping", boundary)


@pytest.mark.postgres
def test_postgresql_sessions_terminated_or_restarted_mid_run(
    pg_cluster: PostgresCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_terminate_backend on the exporter's sessions at each learner boundary, and a server
    restart mid-run: the run stops (nothing published), and the rerun completes it exactly."""
    source = make_postgres_demo(pg_cluster, "dbfaults", learners=DEMO_LEARNERS)
    matrix = Matrix(source, tmp_path / "runs", monkeypatch)
    family = "connection terminated at each learner boundary / postgresql"
    for n in range(1, len(ARCHIVED) + 1):
        with monkeypatch.context() as patch:
            _at_learner(patch, n, lambda: pg_cluster.terminate_sessions("learner-export"))
            matrix.check(family, lambda faults: faults.disarm())
        FAULT_TALLY[family].injected += 1
        FAULT_TALLY[family].recovered += 1
        FAULT_TALLY[family].identical += 1
    restart = "server restarted mid-run / postgresql"
    with monkeypatch.context() as patch:
        _at_learner(patch, 2, pg_cluster.restart)
        matrix.check(restart, lambda faults: faults.disarm())
    FAULT_TALLY[restart].injected += 1
    FAULT_TALLY[restart].recovered += 1
    FAULT_TALLY[restart].identical += 1


def test_the_destination_removed_mid_run(
    sqlite_source: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole destination directory deleted at every 12th call that changes it: the rerun
    starts again from nothing and gives the same snapshot."""
    matrix = Matrix(sqlite_source, tmp_path / "runs", monkeypatch)
    family = "destination removed mid-run / sqlite"
    for n in range(1, matrix.clean_mutations + 1, 12):
        dest = matrix.base / f"run-{matrix.runs + 1}" / "dest"
        matrix.check(
            family,
            lambda faults, n=n, dest=dest: faults.arm_action(  # type: ignore[misc]
                n, lambda: shutil.rmtree(dest, ignore_errors=True)
            ),
        )
    assert FAULT_TALLY[family].injected > 5


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """A real tmpfs of 64 KiB at tmp_path/"mnt", and a function to remount it with options."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()[:80]}); the injected "
                    "ENOSPC and EROFS above cover these paths")  # fmt: skip

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)

    try:
        yield remount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_then_more_space(
    sqlite_source: DemoSource, tmp_path: Path, tmpfs: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A destination on a tmpfs too small for the run fails with ENOSPC (one line, nothing
    published); given room, the same run finishes exactly as on a roomy disk."""
    reference = Matrix(sqlite_source, tmp_path / "runs", monkeypatch).reference
    dest, audit = tmp_path / "mnt" / "dest", tmp_path / "audit.jsonl"
    with pytest.raises(ArchiveError, match=r"first error: writing .* \(No space left on device\)"):
        _run(sqlite_source, dest, audit)
    assert not (dest / "night").exists()
    tmpfs("size=16m")
    _run(sqlite_source, dest, audit)
    got = _outcome(dest, audit)
    assert (got.documents, got.parquet, got.manifest) == (
        reference.documents, reference.parquet, reference.manifest,
    )  # fmt: skip
    assert got.audit == reference.audit
    tally = FAULT_TALLY.setdefault("real ENOSPC (64 KiB tmpfs) / sqlite", Tally())
    tally.injected += 1
    tally.recovered += 1
    tally.identical += 1


def test_a_destination_made_read_only_mid_run(
    sqlite_source: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The destination turns read-only in the middle of the run (from the Nth call that changes
    it on, every such call fails with EROFS, as after a read-only remount; a real remount is
    refused while the run holds files open), at every 10th N; writable again, the rerun completes
    it exactly."""
    matrix = Matrix(sqlite_source, tmp_path / "runs", monkeypatch)
    family = "destination made read-only mid-run (EROFS) / sqlite"
    for n in range(1, matrix.clean_mutations + 1, 10):
        matrix.check(family, lambda faults, n=n: faults.arm_from(n, errno.EROFS))  # type: ignore[misc]
    assert FAULT_TALLY[family].injected > 10


def test_schema_drift_between_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between an interrupted run and its rerun, the source gains a column (ignored: the rerun
    completes exactly) or loses an exported one (refused before anything is written, naming it)."""
    source = make_sqlite_demo(tmp_path / "drift.sqlite3", learners=DEMO_LEARNERS)
    matrix = Matrix(source, tmp_path / "runs", monkeypatch)
    engine = sa.create_engine(source.owner_url)

    def alter(statement: str) -> Callable[[], None]:
        def run() -> None:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)

        return run

    matrix.check(
        "schema drift: a column added / sqlite",
        lambda faults: faults.arm_kill(matrix.clean_mutations // 2),
        before_rerun=alter("ALTER TABLE lessons ADD COLUMN points INTEGER"),
    )
    dest, audit = tmp_path / "dropped" / "dest", tmp_path / "dropped" / "audit.jsonl"
    alter("ALTER TABLE lessons DROP COLUMN difficulty")()
    with pytest.raises(TerminalExtractError, match=r"column lessons\.difficulty is missing"):
        _run(source, dest, audit)
    assert not dest.exists() or list(dest.rglob("*.json")) == []  # nothing written
    engine.dispose()


@pytest.fixture
def sqlite_source(tmp_path: Path) -> DemoSource:
    return make_sqlite_demo(tmp_path / "faults.sqlite3", learners=DEMO_LEARNERS)
