"""`learner_export.settings`: the one typed settings object, read from the environment.

The suite's autouse `isolated_settings` fixture has already removed every LEARNER_EXPORT_
variable (and DATABASE_URL, JWT_SECRET, XDG_DATA_HOME) and pointed LEARNER_EXPORT_DATA_DIR at a
directory of the test's own; each test here sets what it reads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from learner_export.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_defaults(isolated_settings: Path) -> None:
    settings = Settings()

    assert settings.data_dir == isolated_settings
    assert settings.database_url is None
    assert settings.source_url == f"sqlite:///{isolated_settings / 'demo.sqlite3'}"
    assert settings.demo_database_path == isolated_settings / "demo.sqlite3"
    assert settings.audit_log_path == isolated_settings / "audit.jsonl"
    assert settings.exported_by is None
    assert settings.exports_per_minute == 30
    assert (settings.jwt_secret, settings.encryption_key, settings.pseudonym_key) == (None,) * 3


@pytest.mark.parametrize(
    ("xdg_data_home", "expected"),
    [
        (None, "home/.local/share/learner-export"),
        ("", "home/.local/share/learner-export"),  # set but empty: as if unset (XDG spec)
        ("xdg", "xdg/learner-export"),
    ],
    ids=["unset", "empty", "set"],
)
def test_the_data_dir_follows_xdg_data_home_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg_data_home: str | None, expected: str
) -> None:
    monkeypatch.delenv("LEARNER_EXPORT_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if xdg_data_home is not None:
        monkeypatch.setenv("XDG_DATA_HOME", xdg_data_home and str(tmp_path / xdg_data_home))

    assert Settings().data_dir == tmp_path / expected


@pytest.mark.parametrize("name", ["DATABASE_URL", "LEARNER_EXPORT_DATABASE_URL"])
def test_the_database_url_is_read_under_either_name(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "postgresql://exporter@127.0.0.1/platform")

    settings = Settings()

    assert settings.source_url == "postgresql://exporter@127.0.0.1/platform"


@pytest.mark.parametrize("name", ["JWT_SECRET", "LEARNER_EXPORT_JWT_SECRET"])
def test_the_jwt_secret_is_read_under_either_name(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "the-platform-secret")

    secret = Settings().jwt_secret

    assert secret is not None and secret.get_secret_value() == "the-platform-secret"


def test_every_other_setting_is_read_from_its_prefixed_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "LEARNER_EXPORT_DATA_DIR": str(tmp_path / "data"),
        "LEARNER_EXPORT_EXPORTED_BY": "2",
        "LEARNER_EXPORT_AUDIT_LOG": str(tmp_path / "logs" / "exports.jsonl"),
        "LEARNER_EXPORT_EXPORTS_PER_MINUTE": "5",
        "LEARNER_EXPORT_ENCRYPTION_KEY": "the-encryption-key",
        "LEARNER_EXPORT_PSEUDONYM_KEY": "the-pseudonym-key",
    }.items():
        monkeypatch.setenv(name, value)

    settings = Settings()

    assert settings.data_dir == tmp_path / "data"
    assert settings.demo_database_path == tmp_path / "data" / "demo.sqlite3"
    assert settings.exported_by == 2
    assert settings.audit_log_path == tmp_path / "logs" / "exports.jsonl"
    assert settings.exports_per_minute == 5
    assert settings.encryption_key is not None and settings.pseudonym_key is not None
    assert settings.encryption_key.get_secret_value() == "the-encryption-key"
    assert settings.pseudonym_key.get_secret_value() == "the-pseudonym-key"


def test_the_servers_database_timeouts_are_read_and_bounded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LEARNER_EXPORT_DATABASE_POOL_TIMEOUT", "0.5")
    monkeypatch.setenv("LEARNER_EXPORT_DATABASE_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("LEARNER_EXPORT_DATABASE_STATEMENT_TIMEOUT", "2.5")
    monkeypatch.setenv("LEARNER_EXPORT_AUDIT_LOG", str(tmp_path / "logs" / "a.jsonl"))
    settings = Settings()
    assert (
        settings.database_pool_timeout,
        settings.database_connect_timeout,
        settings.database_statement_timeout,
    ) == (0.5, 3, 2.5)
    assert settings.rate_limit_path == tmp_path / "logs" / "export-rate.sqlite3"
    monkeypatch.setenv("LEARNER_EXPORT_DATABASE_CONNECT_TIMEOUT", "1")  # libpq would wait 2
    with pytest.raises(ValidationError, match="database_connect_timeout"):
        Settings()


def test_unprefixed_names_of_the_other_settings_are_not_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXPORTS_PER_MINUTE", "5")
    monkeypatch.setenv("ENCRYPTION_KEY", "not-ours")

    settings = Settings()

    assert settings.exports_per_minute == 30
    assert settings.encryption_key is None


def test_unknown_prefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEARNER_EXPORT_NO_SUCH_SETTING", "1")

    assert Settings().exports_per_minute == 30


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("LEARNER_EXPORT_EXPORTED_BY", "0", "greater than 0"),
        ("LEARNER_EXPORT_EXPORTED_BY", "-2", "greater than 0"),
        ("LEARNER_EXPORT_EXPORTED_BY", "two", "valid integer"),
        ("LEARNER_EXPORT_EXPORTS_PER_MINUTE", "0", "greater than 0"),
        ("LEARNER_EXPORT_EXPORTS_PER_MINUTE", "1.5", "valid integer"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError) as refused:
        Settings()

    assert name.removeprefix("LEARNER_EXPORT_").lower() in str(refused.value)
    assert problem in str(refused.value)


def test_secrets_never_show_in_repr_str_or_a_dump(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "DATABASE_URL": "postgresql://exporter:database-password@127.0.0.1/platform",
        "JWT_SECRET": "jwt-secret-value",
        "LEARNER_EXPORT_ENCRYPTION_KEY": "encryption-key-value",
        "LEARNER_EXPORT_PSEUDONYM_KEY": "pseudonym-key-value",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)

    settings = Settings()

    shown = repr(settings) + str(settings) + settings.model_dump_json() + str(settings.model_dump())
    for value in secrets.values():
        assert value not in shown
    assert shown.count("**********") >= len(secrets)


def test_settings_cannot_be_changed_once_built() -> None:
    settings = Settings()

    with pytest.raises(ValidationError, match="frozen"):
        settings.exports_per_minute = 1_000_000


def test_get_settings_builds_once_until_its_cache_is_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEARNER_EXPORT_EXPORTS_PER_MINUTE", "7")
    first = get_settings()
    monkeypatch.setenv("LEARNER_EXPORT_EXPORTS_PER_MINUTE", "8")

    assert get_settings() is first
    assert first.exports_per_minute == 7

    get_settings.cache_clear()

    assert get_settings().exports_per_minute == 8


def test_importing_the_module_reads_no_environment(tmp_path: Path) -> None:
    # A value Settings() would refuse: importing must not build the settings, only using them.
    bad = {"LEARNER_EXPORT_EXPORTS_PER_MINUTE": "0", "PATH": "/usr/bin:/bin"}
    script = "import learner_export.settings as s\nprint('imported')\ns.get_settings()\n"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**bad, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.stdout == "imported\n"
    assert result.returncode != 0 and "exports_per_minute" in result.stderr
