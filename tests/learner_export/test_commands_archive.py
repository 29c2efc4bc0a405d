"""The archive, verify, decrypt and schedule commands, as a user runs them.

Most run `learner_export.cli.main` in this process; those that archive use the suite's Prefect
server (`prefect_server`, the session fixture of tests/conftest.py). `schedule` and the
fresh-machine run are real subprocesses that start their own local Prefect server, as on a user's machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from cryptography.fernet import Fernet

from learner_export.cli import main
from learner_export.processes import free_port, stop_process
from learner_export.verify import verify_snapshot
from load.destination import open_destination, open_snapshot
from load.manifest import Manifest
from tests.conftest import DemoSource, use_source
from tests.restore_helpers import EXPORT_DATE, write_documents

CLI = Path(sys.executable).parent / "learner-export"
STARTUP_SECONDS = 180.0
"""How long the schedule command may take to start its Prefect server and register (a bound on
waiting, not a measurement)."""

T = TypeVar("T")


pytestmark = pytest.mark.usefixtures("prefect_environment")


@dataclass(frozen=True)
class Ran:
    """A command's exit status and what it printed."""

    code: int
    out: str
    err: str


Cli = Callable[..., Ran]


@pytest.fixture
def cli(
    sqlite_demo: DemoSource, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Cli:
    """`learner-export ARGS...` in this process, with the SQLite demo as the source."""
    use_source(sqlite_demo, monkeypatch)

    def run(*args: str) -> Ran:
        code = main(list(args))
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


# --- refusals before anything runs -----------------------------------------------------------


@pytest.mark.parametrize("command", ["archive", "schedule"])
def test_encrypt_without_a_key_is_one_line_and_exit_1(
    cli: Cli, tmp_path: Path, command: str
) -> None:
    ran = cli(command, "--encrypt", "--no-parquet", "--dest", str(tmp_path / "dest"))
    assert ran.code == 1
    assert ran.err.count("\n") == 1 and "LEARNER_EXPORT_ENCRYPTION_KEY" in ran.err
    assert "Traceback" not in ran.err
    assert not (tmp_path / "dest").exists()


def test_parquet_without_a_pseudonym_key_is_refused(cli: Cli, tmp_path: Path) -> None:
    ran = cli("archive", "--dest", str(tmp_path))
    assert ran.code == 1
    assert "--no-parquet" in ran.err


def test_a_bad_learner_list_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["archive", "--learners", "3,x"])
    assert caught.value.code == 2
    assert "comma-separated list" in capsys.readouterr().err


# --- decrypt -----------------------------------------------------------------------------------


@pytest.fixture
def document(sqlite_exports: dict[int, bytes]) -> bytes:
    return sqlite_exports[3]


@pytest.mark.parametrize("suffix", [".enc", ".gz.enc", ".zst.enc", ".gz"])
def test_decrypt_writes_the_plain_document_and_prints_its_path(
    cli: Cli, document: bytes, fernet_key: bytes, tmp_path: Path, suffix: str
) -> None:
    (stored,) = write_documents(tmp_path / "in", {3: document}, suffix=suffix, key=fernet_key)
    ran = cli("decrypt", str(stored), "--out", str(tmp_path / "out"))
    assert (ran.code, ran.err) == (0, "")
    plain = Path(ran.out.strip())
    assert plain == tmp_path / "out" / f"learner-data-3-{EXPORT_DATE:%Y-%m-%d}.json"
    assert plain.read_bytes() == document


def test_decrypt_without_a_key_is_one_line_and_writes_nothing(
    cli: Cli, document: bytes, tmp_path: Path
) -> None:
    key = Fernet.generate_key()  # the file's key, which this environment does not have
    (stored,) = write_documents(tmp_path / "in", {3: document}, suffix=".gz.enc", key=key)
    ran = cli("decrypt", str(stored), "--out", str(tmp_path / "out"))
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        "learner-export: error: decrypting needs the key: set LEARNER_EXPORT_ENCRYPTION_KEY\n"
    )
    assert not (tmp_path / "out").exists()


def test_decrypt_with_another_key_is_one_line_and_writes_nothing(
    cli: Cli, document: bytes, fernet_key: bytes, tmp_path: Path
) -> None:
    other = Fernet.generate_key()
    (stored,) = write_documents(tmp_path / "in", {3: document}, suffix=".enc", key=other)
    ran = cli("decrypt", str(stored), "--out", str(tmp_path / "out"))
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        f"learner-export: error: {stored.name}: cannot be decrypted: wrong key, or the file was "
        "altered\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["learner-data-3-2024-01-15.json.gz.enc", "x.json.zst"])
def test_decrypt_of_a_missing_file_is_one_line(
    cli: Cli, fernet_key: bytes, tmp_path: Path, name: str
) -> None:
    missing = tmp_path / name
    ran = cli("decrypt", str(missing), "--out", str(tmp_path / "out"))
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == f"learner-export: error: {missing}: no such file\n"


# --- archive options given on the command line reach the flow ---------------------------------


def _archive(*options: str, dest: Path) -> list[str]:
    """`archive` of two small learners, documents only, into `dest`."""
    return ["archive", "--no-parquet", "--learners", "3,6", "--dest", str(dest), *options]


@pytest.mark.usefixtures("prefect_server")
def test_keep_deletes_all_but_the_newest_snapshots(cli: Cli, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    for run_id in ("first", "second"):
        assert cli(*_archive("--run-id", run_id, dest=dest)).code == 0
    ran = cli(*_archive("--run-id", "third", "--keep", "2", dest=dest))
    assert ran.code == 0, ran.err
    assert ran.out.splitlines()[-1] == "retention: deleted snapshot first"
    assert sorted(p.name for p in dest.iterdir()) == [".deleted", "second", "third"]


@pytest.mark.usefixtures("prefect_server")
def test_tolerate_failures_publishes_without_the_learners_that_failed(
    cli: Cli, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    command = ["archive", "--no-parquet", "--learners", "1,3", "--run-id", "t", "--dest", str(dest)]
    refused = cli(*command)  # learner 1 is the demo's parent: it cannot be exported
    assert refused.code == 1
    last = refused.err.splitlines()[-1]  # after Prefect's log lines of the run
    assert last.startswith("learner-export: error: run t: 1 learner(s) could not be ")
    assert "(ids 1)" in last and "--tolerate-failures" in last
    assert "Traceback" not in refused.err
    assert not (dest / "t").exists()

    tolerated = cli(*command, "--tolerate-failures")
    assert tolerated.code == 0, tolerated.err
    assert "learner-export: warning: not exported (tolerated): learner ids 1\n" in tolerated.err
    manifest = Manifest.model_validate_json((dest / "t" / "manifest.json").read_bytes())
    assert ([f.learner_id for f in manifest.files], manifest.not_found) == ([3], [1])


@pytest.fixture
def dask_scheduler() -> Iterator[tuple[str, Callable[[], float]]]:
    """A Dask cluster of one worker process on 127.0.0.1: its address, and the compute seconds
    its scheduler recorded for the archive's chunk tasks."""
    from distributed import LocalCluster

    # ":0": any free port. None still means Dask's default :8787, which two suites running at
    # once on one machine both asked for (the second failed to start its cluster).
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0"
    ) as cluster:

        def chunk_seconds() -> float:
            prefix = cluster.scheduler.task_prefixes.get("archive_chunk_task")
            return 0.0 if prefix is None else float(prefix.all_durations.get("compute", 0.0))

        yield cluster.scheduler_address, chunk_seconds


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_dask_address_runs_the_chunks_on_that_scheduler(
    cli: Cli, tmp_path: Path, dask_scheduler: tuple[str, Callable[[], float]]
) -> None:
    address, chunk_seconds = dask_scheduler
    ran = cli(*_archive("--run-id", "d", "--chunk-size", "1", "--dask-address", address,
                        dest=tmp_path))  # fmt: skip
    assert ran.code == 0, ran.err
    assert chunk_seconds() > 0  # the chunk tasks ran on the cluster, not in local threads
    fs, directory = open_snapshot(str(tmp_path / "d"))
    report = verify_snapshot(fs, directory, None)
    assert (report.documents, report.problems) == (2, [])


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("nonsense", "not a Dask scheduler address (missing port number"),
        ("http://127.0.0.1:8786", "not a Dask scheduler address (unknown address scheme 'http'"),
        pytest.param(
            "tcp://127.0.0.1:{free}",
            "no Dask scheduler answered within",
            marks=pytest.mark.slow,
            id="nothing-listens",
        ),
    ],
)
def test_a_dask_address_without_a_scheduler_is_one_line_before_anything_is_written(
    cli: Cli, tmp_path: Path, address: str, says: str
) -> None:
    address = address.format(free=free_port())
    ran = cli(*_archive("--dask-address", address, dest=tmp_path / "dest"))
    assert (ran.code, ran.out) == (1, "")
    assert ran.err.count("\n") == 1, ran.err
    assert ran.err.startswith(f"learner-export: error: --dask-address {address}: {says}")
    assert not (tmp_path / "dest").exists()


# --- schedule, end to end ---------------------------------------------------------------------


def _eventually(check: Callable[[], T | None], what: str) -> T:
    """`check()` once it returns something; fails after STARTUP_SECONDS."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.2)
    pytest.fail(f"gave up waiting for {what}")


def _local_server(process: subprocess.Popen[str]) -> psutil.Process | None:
    """The Prefect server the command started (`python -m flows.server`), once it has."""
    for child in psutil.Process(process.pid).children():
        if "flows.server" in child.cmdline():
            return child
    return None


def _api_url(server: psutil.Process) -> str:
    command = server.cmdline()
    return f"http://127.0.0.1:{command[command.index('--port') + 1]}/api"


def _run_deployment_once(api_url: str, name: str) -> str:
    """Start one run of the served deployment now (what `prefect deployment run` does) and wait
    until it is over; its final state's name."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):

        def registered() -> DeploymentResponse | None:
            try:
                return client.read_deployment_by_name(name)
            except (ObjectNotFound, httpx.TransportError):  # not served yet, or not listening
                return None

        deployment = _eventually(registered, f"deployment {name}")
        run = client.create_flow_run_from_deployment(deployment.id)

        def finished() -> str | None:
            state = client.read_flow_run(run.id).state
            return state.name if state is not None and state.is_final() else None

        return _eventually(finished, f"the flow run of {name}")


@pytest.mark.slow
def test_schedule_serves_the_deployment_until_interrupted(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    """The real command with no Prefect configured: it starts its own server (with the
    scheduler), serves the deployment, runs it when triggered, and stops cleanly on Ctrl-C (SIGINT
    to its whole process group, as a terminal sends it), taking its server down with it."""
    dest = tmp_path / "dest"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEARNER_EXPORT_"))}
    env.update(DATABASE_URL=sqlite_demo.url, LEARNER_EXPORT_DATA_DIR=str(tmp_path / "data"))
    command = [str(CLI), "schedule", "--no-parquet", "--learners", "3,6", "--name", "test",
               "--dest", str(dest)]  # fmt: skip
    with (tmp_path / "stderr").open("w+") as stderr:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # a process group of its own, like a terminal's job
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == (
                f"serving archive-learners/test on cron '0 2 * * *' (UTC) into {dest}; "
                "Ctrl-C stops\n"
            )
            upcoming = process.stdout.readline()  # the next three 02:00 UTC
            assert re.fullmatch(r"next runs \(UTC\): (\d{4}-\d\d-\d\d 02:00(, )?){3}\n", upcoming)
            server = _eventually(lambda: _local_server(process), "the local Prefect server")
            assert "--services" in server.cmdline()  # its scheduler makes the cron runs
            assert _run_deployment_once(_api_url(server), "archive-learners/test") == "Completed"
            (snapshot,) = [p.parent for p in dest.glob("*/manifest.json")]  # <date>-learners-...
            fs, directory = open_snapshot(str(snapshot))
            report = verify_snapshot(fs, directory, None)
            assert (report.documents, report.problems) == (2, [])

            os.killpg(process.pid, signal.SIGINT)
            assert process.wait(timeout=STARTUP_SECONDS) == 130
        finally:  # after a failure: the command, and whatever it left running
            children = psutil.Process(process.pid).children() if process.poll() is None else []
            stop_process(process)
            for child in children:
                if child.is_running():
                    child.kill()
            assert process.stdout is not None
            process.stdout.close()
        stderr.seek(0)
        errors = stderr.read()
    assert "Traceback" not in errors and "ERROR" not in errors, errors[-3000:]
    assert (
        errors.splitlines()[-1]
        == "learner-export: interrupted; run the same command again to resume"
    )
    assert not server.is_running()  # the local server went with it


@pytest.mark.slow
def test_a_fresh_machine_gets_no_traceback_and_no_telemetry_noise(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    """The real command with a fresh HOME and no Prefect configuration: it starts its own local
    Prefect server, and prints only its own lines."""
    home = tmp_path / "home"
    home.mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "LEARNER_EXPORT_"))
    }
    env.update(
        HOME=str(home), DATABASE_URL=sqlite_demo.url, LEARNER_EXPORT_DATA_DIR=str(home / "d")
    )
    env.pop("XDG_DATA_HOME", None)
    command = [str(CLI), "archive", "--no-parquet", "--dest", str(tmp_path / "out")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    for noise in ("Traceback", "telemetry", "Error", "error", "Warning"):
        assert noise not in output, output[-3000:]
    assert not (home / ".prefect").exists()  # Prefect's home is under the data dir
    assert (home / "d" / "prefect").is_dir()


# --- run identity, abandon, and the checks made before Prefect starts ------------------------

PREFLIGHT = """
import sys
from learner_export.cli import main
code = main(sys.argv[1:])
print("prefect imported" if "prefect" in sys.modules else "prefect not imported")
sys.exit(code)
"""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["archive", "--database-url", "not a url"], "the database URL is not a valid SQLAlchemy URL"),
        (["archive", "--database-url", "mysql://db/x"], "unsupported database kind 'mysql'"),
        (["archive", "--database-url", "sqlite:///{tmp}/missing.db"], "SQLite database {tmp}/missing.db does not exist"),
        (["archive", "--dest", "{tmp}/file/dest"], "reading {tmp}/file/dest/"),
        (["archive", "--database-url", "postgresql://u:pw@127.0.0.1:{port}/x"], "cannot connect to the postgresql source at 127.0.0.1:{port}: connection refused"),
        (["archive", "--encrypt"], "--encrypt needs an encryption key"),
        (["archive", "--run-id", "../up"], "run id '../up' is not allowed"),
        (["schedule", "--cron", "0 2 * * * *"], "--cron '0 2 * * * *' has 6 fields"),
        (["schedule", "--cron", "not a cron"], "--cron 'not a cron' has 3 fields"),
    ],
    ids=["bad-url", "mysql", "missing-sqlite", "dest-not-a-directory", "pg-refused", "no-key", "bad-run-id", "six-fields", "not-cron"],
)  # fmt: skip
def test_refusals_are_one_line_before_prefect_starts(
    sqlite_demo: DemoSource, tmp_path: Path, args: list[str], says: str
) -> None:
    """Expected errors come before Prefect is even imported: one line, exit 1, no traceback."""
    (tmp_path / "file").write_text("")
    port = str(free_port())
    args = [a.format(tmp=tmp_path, port=port) for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEARNER_EXPORT_"))}
    env.update(
        DATABASE_URL=sqlite_demo.url,
        LEARNER_EXPORT_DATA_DIR=str(tmp_path / "data"),
        LEARNER_EXPORT_PSEUDONYM_KEY="test-only-pseudonym-key",
    )
    if "--dest" not in args:
        args += ["--dest", str(tmp_path / "dest")]
    ran = subprocess.run(
        [sys.executable, "-c", PREFLIGHT, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1, ran.stderr
    assert ran.stdout == "prefect not imported\n"
    assert ran.stderr.count("\n") == 1, ran.stderr
    assert ran.stderr.startswith(f"learner-export: error: {says.format(tmp=tmp_path, port=port)}")
    assert "pw" not in ran.stderr and "Traceback" not in ran.stderr
    assert not (tmp_path / "dest").exists()


def _plain_run(source: DemoSource, dest: Path, run_id: str, **options: object) -> str:
    """An archive run made with the flow's recipe without Prefect (fast); its status."""
    import logging
    from datetime import UTC, datetime

    from flows.archive_steps import archive_run
    from flows.chunk import ChunkJob
    from flows.options import ArchiveOptions, run_parameters

    now = datetime.now(UTC)
    archive = ArchiveOptions(dest=str(dest), run_id=run_id, parquet=False, **options)  # type: ignore[arg-type]
    job = ChunkJob(
        destination_url=str(dest), run_id=run_id, source_url=source.url, export_date=now,
        exported_by=None, compress=archive.compress, encryption_key=None, parquet=False,
        pseudonym_key=None,
    )  # fmt: skip
    outcome = archive_run(
        job, run_parameters(archive), now=now, tolerate_failures=False, audit_log=None, keep=None,
        log=logging.getLogger("test"),
    )  # fmt: skip
    return outcome.status


def test_a_finished_run_id_asked_with_other_options_is_refused(
    cli: Cli, sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    """A plain snapshot, then the same run id with --compress zstd: never a silent exit 0."""
    dest = tmp_path / "dest"
    assert _plain_run(sqlite_demo, dest, "t", learners=[3, 4]) == "complete"
    before = sorted(p.name for p in (dest / "t").iterdir())
    ran = cli("archive", "--no-parquet", "--learners", "3,4", "--compress", "zstd", "--run-id", "t",
              "--dest", str(dest))  # fmt: skip
    assert (ran.code, ran.out) == (1, "")
    assert ran.err == (
        f"learner-export: error: snapshot t in {dest} was made with other options (compress "
        "differ); nothing was written. Give this run its own --run-id (e.g. --run-id t-2)\n"
    )
    assert sorted(p.name for p in (dest / "t").iterdir()) == before
    assert _plain_run(sqlite_demo, dest, "t", learners=[3, 4]) == "already-complete"


def test_an_unfinished_run_with_other_learners_is_refused_until_abandoned(
    cli: Cli, sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    """A failed ad-hoc run under the day's id blocks it only until `abandon`, which removes its
    partial files (never a published snapshot) and says so in the audit log."""
    from datetime import UTC, datetime

    from flows.chunk import ChunkJob, archive_chunk
    from flows.options import ArchiveOptions, run_parameters
    from flows.preflight import check_archive
    from flows.run import open_plan
    from load.audit import read_audit

    dest = tmp_path / "dest"
    destination = open_destination(str(dest))
    adhoc = ArchiveOptions(dest=str(dest), run_id="day", learners=[3], parquet=False)
    plan = open_plan(destination, "day", run_parameters(adhoc), now=datetime.now(UTC),
                     learner_ids=lambda: [])  # fmt: skip
    job = ChunkJob(str(dest), "day", sqlite_demo.url, datetime.now(UTC), None, None, None, False,
                   None)  # fmt: skip
    archive_chunk(job, 0, plan.chunks[0])  # one chunk done, then the run "failed"

    ran = cli("archive", "--no-parquet", "--run-id", "day", "--dest", str(dest))
    assert (ran.code, ran.err.count("\n")) == (1, 1)
    assert ran.err == (
        f"learner-export: error: unfinished run day in {dest} was started with other options "
        "(learners differ); nothing was written. Repeat its options to finish it, give this run "
        f"its own --run-id, or drop it with: learner-export abandon day --dest {dest}\n"
    )

    dropped = cli("abandon", "day", "--dest", str(dest))
    assert (dropped.code, dropped.err) == (0, "")
    assert dropped.out == (
        f"abandoned the unfinished run day in {dest}: 3 files removed; the audit log records it\n"
    )
    assert list(dest.iterdir()) == []  # nothing left: no run, no lock, no .incomplete
    (line,) = [r for r in read_audit(_audit_log()) if r.get("event") == "run-abandoned"]
    assert (line["runId"], line["status"], line["files"]) == ("day", 410, 3)
    everyone = ArchiveOptions(dest=str(dest), run_id="day", parquet=False)
    from pydantic import SecretStr

    from flows.options import ArchiveSecrets

    secrets = ArchiveSecrets(source_url=SecretStr(sqlite_demo.url))
    assert check_archive(everyone, secrets, now=datetime.now(UTC)) == "day"  # free again

    again = cli("abandon", "day", "--dest", str(dest))
    assert again.err == f"learner-export: error: there is no unfinished run day in {dest}\n"


def _audit_log() -> Path:
    from learner_export.settings import get_settings

    return get_settings().audit_log_path


def test_an_adhoc_run_never_takes_the_nightly_id() -> None:
    from datetime import UTC, datetime

    from flows.options import default_run_id

    now = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    nightly = default_run_id(None, now)
    adhoc = default_run_id([4, 3], now)
    assert nightly == "2026-12-01"
    assert (
        adhoc.startswith("2026-12-01-learners-") and len(adhoc) == len("2026-12-01-learners-") + 8
    )
    assert default_run_id([3, 4, 4], now) == adhoc  # the same learners resume the same run
    assert default_run_id([3], now) != adhoc


def test_a_run_being_written_elsewhere_is_refused_in_one_line(cli: Cli, tmp_path: Path) -> None:
    from load.run_lock import run_lock

    dest = tmp_path / "dest"
    with run_lock(open_destination(str(dest)), "busy"):
        ran = cli("archive", "--no-parquet", "--run-id", "busy", "--dest", str(dest))
    assert (ran.code, ran.err.count("\n")) == (1, 1)
    assert ran.err.startswith(
        f"learner-export: error: run busy is being written by another process (pid {os.getpid()} on "
    )
