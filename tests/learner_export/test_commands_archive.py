"""The archive, verify, decrypt and schedule commands, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from learner_export.cli import main
from learner_export.settings import get_settings
from tests.conftest import DemoSource

CLI = Path(sys.executable).parent / "learner-export"


@pytest.fixture(autouse=True)
def prefect_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The commands set Prefect's variables where unset; set them here so they are undone."""
    for name, value in {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    }.items():
        monkeypatch.setenv(name, os.environ.get(name, value))


def _use(source: DemoSource, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    monkeypatch.setenv("DATABASE_URL", source.url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def test_encrypt_without_a_key_is_one_line_and_exit_1(
    sqlite_demo: DemoSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use(sqlite_demo, monkeypatch)
    assert main(["archive", "--encrypt", "--no-parquet", "--dest", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LEARNER_EXPORT_ENCRYPTION_KEY" in err
    assert "Traceback" not in err


def test_parquet_without_a_pseudonym_key_is_refused(
    sqlite_demo: DemoSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use(sqlite_demo, monkeypatch)
    assert main(["archive", "--dest", str(tmp_path)]) == 1
    assert "--no-parquet" in capsys.readouterr().err


def test_a_bad_learner_list_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["archive", "--learners", "3,x"])
    assert caught.value.code == 2
    assert "comma-separated list" in capsys.readouterr().err


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
