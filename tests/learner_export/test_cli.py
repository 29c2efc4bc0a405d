"""The `learner-export` command, run as a user runs it: a separate process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import DemoSource
from transform.schema import schema_errors


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "learner_export.cli", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False,
    )  # fmt: skip


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
        assert "lessons.spec of row" in result.stderr and "malformed JSON" in result.stderr


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
