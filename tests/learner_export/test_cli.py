"""The `learner-export` command, run as a user runs it: a separate process."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from load.codec import inflation_limit
from load.manifest import MANIFEST_NAME, FileEntry, to_json
from tests.conftest import DemoSource
from tests.factories import platform_like_sqlite, zstd_bomb
from tests.restore_helpers import manifest_of, user_ids
from transform.schema import schema_errors

COMMAND = [sys.executable, "-m", "learner_export.cli"]


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@dataclass(frozen=True)
class Measured:
    """A finished command: its exit status, what it printed, and the most memory it held."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss: int
    """Bytes: the process's peak resident set (its ru_maxrss)."""


_MEASURED_MAIN = """\
import sys
from pathlib import Path

from learner_export.cli import main

code = main(sys.argv[2:])
status = Path("/proc/self/status").read_text().splitlines()
Path(sys.argv[1]).write_text(next(line for line in status if line.startswith("VmHWM:")))
sys.exit(code)
"""
"""The CLI's main, then its own peak resident set written to a file. VmHWM belongs to the
process's memory since exec; ru_maxrss would also count the pages it shared, when forked, with
the test process that started it (hundreds of MB in a full run)."""


def run_cli_measured(*args: str, env: dict[str, str], cwd: Path) -> Measured:
    """`run_cli`, with the command's own peak resident set."""
    peak = cwd / "peak-rss.txt"
    result = subprocess.run([sys.executable, "-c", _MEASURED_MAIN, str(peak), *args],
                            capture_output=True, text=True, env=env, cwd=cwd, timeout=300,
                            check=False)  # fmt: skip
    kilobytes = int(peak.read_text().split()[1])  # "VmHWM:   123456 kB"
    return Measured(result.returncode, result.stdout, result.stderr, kilobytes * 1024)


def env_dir(env: dict[str, str]) -> Path:
    """The data directory (audit log, demo database) of the command's environment."""
    return Path(env["LEARNER_EXPORT_DATA_DIR"])


@pytest.fixture
def env(isolated_settings: Path) -> dict[str, str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("LEARNER_EXPORT_", "DATABASE_URL"))
    }
    return base | {"LEARNER_EXPORT_DATA_DIR": str(isolated_settings)}


def test_export_writes_the_contract_file_and_prints_its_path(
    demo_source: DemoSource, env: dict[str, str], tmp_path: Path
) -> None:
    result = run_cli("export", "3", "--out", str(tmp_path / "out"), "--exported-by", "2",
                     "--database-url", demo_source.url, env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.parent == tmp_path / "out"
    assert path.name.startswith("learner-data-3-") and path.name.endswith(".json")
    document = orjson.loads(path.read_bytes())
    assert schema_errors(document) == []
    assert document["learner"]["id"] == 3 and document["exportedBy"] == 2
    audit = [
        orjson.loads(line) for line in (env_dir(env) / "audit.jsonl").read_bytes().splitlines()
    ]
    assert [(a["via"], a["userId"], a["learnerId"], a["status"]) for a in audit] == [
        ("cli", 2, 3, 200)
    ]
    assert audit[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    if demo_source.kind == "sqlite":  # the one malformed spec is reported, by row only
        assert re.fullmatch(
            r"learner-export: warning: learner 3: lessons\.spec of row [0-9a-f-]{36}: "
            r"malformed JSON, exported as null\n",
            result.stderr,
        )
    else:
        assert result.stderr == ""


@pytest.mark.parametrize("learner_id", ["1", "2", "999999"])
def test_a_non_learner_is_one_line_exit_1_and_no_file(
    sqlite_demo: DemoSource, env: dict[str, str], tmp_path: Path, learner_id: str
) -> None:
    result = run_cli("export", learner_id, "--out", str(tmp_path / "out"),
                     "--database-url", sqlite_demo.url, env=env, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr
        == f"learner-export: error: learner {learner_id} not found: no LEARNER user has this id\n"
    )
    assert result.stdout == ""
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_truncation_is_reported(
    sqlite_demo: DemoSource, env: dict[str, str], tmp_path: Path
) -> None:
    big = str(sqlite_demo.rows.learner_ids[1])
    result = run_cli("export", big, "--database-url", sqlite_demo.url, env=env, cwd=tmp_path)
    assert result.returncode == 0
    assert (
        f"learner {big} has 1050 lessons; the document holds the 1000 most recent" in result.stderr
    )
    assert len(orjson.loads(Path(result.stdout.strip()).read_bytes())["lessons"]) == 1000


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "03", "３"])
def test_a_malformed_id_is_a_usage_error(env: dict[str, str], tmp_path: Path, bad: str) -> None:
    result = run_cli("export", bad, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "is not a positive whole number" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_a_database_it_says_how_to_make_one(env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli("export", "3", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "run `learner-export demo-db`" in result.stderr
    assert result.stderr.count("\n") == 1


def test_demo_db_then_export_works_on_the_embedded_default(
    env: dict[str, str], tmp_path: Path
) -> None:
    made = run_cli("demo-db", "--learners", "3", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "3 learners" in made.stdout
    again = run_cli("demo-db", "--learners", "3", env=env, cwd=tmp_path)
    assert again.returncode == 1 and "--replace" in again.stderr
    exported = run_cli("export", "3", env=env, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    written = Path(exported.stdout.strip())  # absolute, in the current directory by default
    assert written.parent == tmp_path and written.is_file()


def test_export_never_imports_prefect(
    sqlite_demo: DemoSource, env: dict[str, str], tmp_path: Path
) -> None:
    """The one-off export starts fast: Prefect (and FastAPI) stay unimported."""
    code = (
        "import sys; from learner_export.cli import main; "
        f"rc = main(['export', '3', '--database-url', {sqlite_demo.url!r}]); "
        "heavy = sorted(m for m in ('prefect', 'fastapi', 'pandas', 'pyarrow') if m in sys.modules); "
        "print(rc, heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=120, check=False)  # fmt: skip
    assert result.stdout.splitlines()[-1] == "0 []", result.stderr


# --- decompression bombs ----------------------------------------------------------------------

BOMB_NAME = "learner-data-3-2024-01-15.json.zst"
BOMB_INFLATES_TO = 4 * 1024**3
PEAK_RSS_BOUND = 512 * 1024**2
"""Far below what inflating the bomb would take (4 GiB, twice over to join it), and above what a
command needs with the decoder refusing it at its inflation limit (about 130 MB)."""


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot holding one Zstandard file of 128 KiB that inflates to 4 GiB, listed in its
    manifest with its true size and sha256 (so that checksums pass and the decoder meets it)."""
    snapshot = tmp_path_factory.mktemp("bomb") / "snapshot"
    snapshot.mkdir()
    data = zstd_bomb(BOMB_INFLATES_TO)
    (snapshot / BOMB_NAME).write_bytes(data)
    entry = FileEntry(path=BOMB_NAME, learner_id=3, bytes=len(data),
                      sha256=hashlib.sha256(data).hexdigest(), lessons_exported=0,
                      lessons_total=0, truncated=False)  # fmt: skip
    (snapshot / MANIFEST_NAME).write_bytes(to_json(manifest_of([entry])))
    return snapshot


@pytest.mark.parametrize(
    ("command", "stderr_lines"),
    [("verify", 2), ("decrypt", 1), ("restore", 2)],  # verify and restore then sum up, in a line
)
def test_a_decompression_bomb_is_refused_in_one_line_with_bounded_memory(
    bomb: Path, env: dict[str, str], tmp_path: Path, command: str, stderr_lines: int
) -> None:
    target = f"sqlite:///{tmp_path / 'target.sqlite3'}"
    args = {
        "verify": ["verify", str(bomb)],
        "decrypt": ["decrypt", str(bomb / BOMB_NAME), "--out", str(tmp_path / "out")],
        "restore": ["restore", str(bomb), "--database-url", target],
    }[command]

    result = run_cli_measured(*args, env=env, cwd=tmp_path)

    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == stderr_lines, result.stderr
    limit = inflation_limit(len((bomb / BOMB_NAME).read_bytes()))
    (refusal,) = [line for line in result.stderr.splitlines() if "decompresses to" in line]
    assert f"{BOMB_NAME}: decompresses to more than {limit} bytes; refused" in refusal
    assert limit < BOMB_INFLATES_TO / 10  # refused long before the end of the bomb
    assert result.peak_rss < PEAK_RSS_BOUND, f"peak RSS {result.peak_rss / 1024**2:.0f} MiB"
    assert not (tmp_path / "out").exists()
    if command == "restore":
        assert user_ids(target) == []
        assert refusal.count(BOMB_NAME) == 1  # the outcome names the file once


def test_indexes_prints_what_the_source_lacks_and_runs_nothing(
    sqlite_demo: DemoSource, env: dict[str, str], tmp_path: Path
) -> None:
    platform = platform_like_sqlite(tmp_path / "platform.sqlite3")
    before = (tmp_path / "platform.sqlite3").read_bytes()
    result = run_cli("indexes", "--database-url", platform, env=env, cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "CREATE INDEX IF NOT EXISTS lessons_learner_created_idx ON lessons (learner_id, created_at);",
        "CREATE INDEX IF NOT EXISTS achievements_learner_idx ON achievements (learner_id);",
        "CREATE INDEX IF NOT EXISTS learner_profiles_user_idx ON learner_profiles (user_id);",
    ]
    assert (tmp_path / "platform.sqlite3").read_bytes() == before
    complete = run_cli("indexes", "--database-url", sqlite_demo.url, env=env, cwd=tmp_path)
    assert complete.stdout == "-- the source has every index the export needs\n"
    every = run_cli("indexes", "--all", "--database-url", sqlite_demo.url, env=env, cwd=tmp_path)
    assert len(every.stdout.splitlines()) == 3


def test_serve_warns_at_start_of_the_indexes_the_source_lacks(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from learner_export.serving import prepare
    from learner_export.settings import Settings

    platform = platform_like_sqlite(tmp_path / "platform.sqlite3")
    settings = Settings(DATABASE_URL=platform, JWT_SECRET="x" * 32, data_dir=tmp_path / "data")
    args = argparse.Namespace(workers=1, ssl_keyfile=None, ssl_certfile=None, demo=False)
    prepare(args, settings)
    # The indexes' warning, then the notice's (issue 13: no notice configuration here).
    line, notice = capsys.readouterr().err.splitlines()
    assert line.startswith("learner-export: warning: the source has no index on lessons.learner_id")
    assert notice.startswith("learner-export: warning: no notice configuration")
