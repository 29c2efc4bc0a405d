"""The archive, verify and decrypt commands end to end, as a user runs them, on the suite's
Prefect server (its fixture lives with the flow tests)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from cryptography.fernet import Fernet

from learner_export.cli import main
from tests.conftest import DemoSource
from tests.learner_export.test_commands_archive import _use, prefect_environment

__all__ = ["prefect_environment"]  # the autouse fixture applies here too


@pytest.mark.usefixtures("prefect_server")
def test_archive_verify_and_decrypt(
    sqlite_demo: DemoSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = Fernet.generate_key().decode()
    _use(sqlite_demo, monkeypatch, LEARNER_EXPORT_ENCRYPTION_KEY=key)
    dest = tmp_path / "dest"
    args = ["archive", "--no-parquet", "--encrypt", "--compress", "gzip", "--run-id", "r1"]
    assert main([*args, "--learners", "3,4", "--dest", str(dest), "--exported-by", "2"]) == 0
    out = capsys.readouterr().out
    assert "snapshot r1 complete: 2 documents" in out
    assert f"snapshot: {dest}/r1" in out

    assert main(["verify", str(dest / "r1")]) == 0
    assert "ok, 2 documents" in capsys.readouterr().out

    encrypted = dest / "r1" / next(p.name for p in (dest / "r1").glob("learner-data-3-*"))
    assert main(["decrypt", str(encrypted), "--out", str(tmp_path / "plain")]) == 0
    plain = Path(capsys.readouterr().out.strip())
    assert plain.name == encrypted.name.removesuffix(".gz.enc")
    document = orjson.loads(plain.read_bytes())
    assert (document["learner"]["id"], document["exportedBy"]) == (3, 2)

    encrypted.write_bytes(encrypted.read_bytes()[:-1] + b"A")  # tampered with
    assert main(["verify", str(dest / "r1")]) == 1
    err = capsys.readouterr().err
    assert "sha256 differs" in err and encrypted.name in err
