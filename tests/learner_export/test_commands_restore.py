"""The `learner-export restore` command: what it prints, and its exit status."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from learner_export.cli import main
from tests.conftest import NewTarget
from tests.restore_helpers import (
    edited,
    export_all,
    learner_row_counts,
    make_snapshot,
    write_documents,
)


def personal_values(document: bytes) -> list[str]:
    learner = orjson.loads(document)["learner"]
    return [learner[key] for key in ("username", "email", "name") if learner[key]]


def test_restore_writes_every_learner_and_says_passwords_must_be_reset(
    sqlite_exports: dict[int, bytes],
    new_target: NewTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = new_target("sqlite")
    paths = write_documents(tmp_path / "exports", sqlite_exports)

    code = main(["restore", *map(str, paths), "--database-url", target])

    out, err = capsys.readouterr()
    assert code == 0
    assert "created the contract's tables" in out
    assert f"summary: {len(sqlite_exports)} restored, 0 skipped, 0 refused" in out
    assert "password reset" in err and f"the {len(sqlite_exports)} learner account(s)" in err
    assert "learner 4 was truncated at export" in err
    assert export_all(target) == sqlite_exports
    database = Path(target.removeprefix("sqlite:///"))
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    for document in sqlite_exports.values():
        for value in personal_values(document):
            assert value not in out + err


def test_restore_reads_a_snapshot_directory(
    sqlite_exports: dict[int, bytes],
    new_target: NewTarget,
    fernet_key: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    documents = {i: sqlite_exports[i] for i in (3, 6)}
    snapshot = make_snapshot(tmp_path / "snap", documents, suffix=".gz.enc", key=fernet_key)
    target = new_target("sqlite")

    code = main(["restore", str(snapshot), "--database-url", target])

    assert code == 0
    assert "summary: 2 restored, 0 skipped, 0 refused" in capsys.readouterr().out
    assert {i: export_all(target)[i] for i in documents} == documents


def test_anything_refused_makes_the_exit_status_non_zero(
    sqlite_exports: dict[int, bytes],
    new_target: NewTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = edited(sqlite_exports[6], [(("lessons", 0, "createdAt"), "2024-02-30T10:00:00.000Z")])
    paths = write_documents(tmp_path, {3: sqlite_exports[3], 6: bad})
    target = new_target("sqlite")

    code = main(["restore", *map(str, paths), "--database-url", target])

    out, err = capsys.readouterr()
    assert code == 1
    assert "summary: 1 restored, 0 skipped, 1 refused" in out
    assert "refused learner 6 from" in err and "/lessons/0/createdAt" in err
    assert "learner-export: error: 1 refused; nothing was written for them" in err
    assert set(learner_row_counts(target, 6).values()) == {0}


@pytest.mark.parametrize(
    ("policy", "code", "summary"),
    [
        ("fail", 1, "0 restored, 0 skipped, 1 refused"),
        ("skip", 0, "0 restored, 1 skipped, 0 refused"),
        ("replace", 0, "1 restored, 0 skipped, 0 refused"),
    ],
)
def test_on_conflict_decides_what_happens_to_a_learner_already_there(
    sqlite_exports: dict[int, bytes],
    new_target: NewTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    policy: str,
    code: int,
    summary: str,
) -> None:
    paths = [str(p) for p in write_documents(tmp_path, {3: sqlite_exports[3]})]
    target = new_target("sqlite")
    assert main(["restore", *paths, "--database-url", target]) == 0
    capsys.readouterr()

    assert main(["restore", *paths, "--database-url", target, "--on-conflict", policy]) == code

    assert f"summary: {summary}" in capsys.readouterr().out
    assert export_all(target)[3] == sqlite_exports[3]


def test_missing_parent_fail_refuses_and_create_says_so(
    sqlite_exports: dict[int, bytes],
    new_target: NewTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = [str(p) for p in write_documents(tmp_path, {3: sqlite_exports[3]})]
    target = new_target("sqlite")

    assert main(["restore", *paths, "--database-url", target, "--missing-parent", "fail"]) == 1
    assert "parent 1 is not in the target (--missing-parent fail)" in capsys.readouterr().err
    assert main(["restore", *paths, "--database-url", target]) == 0
    assert "created a placeholder PARENT account" in capsys.readouterr().err


def test_the_target_url_is_required(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--database-url" in capsys.readouterr().err


def test_a_target_with_only_some_of_the_tables_is_refused_in_one_line(
    sqlite_exports: dict[int, bytes],
    new_target: NewTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = new_target("sqlite")
    engine = sa.create_engine(target)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (id integer PRIMARY KEY)"))
    engine.dispose()
    paths = [str(p) for p in write_documents(tmp_path, {3: sqlite_exports[3]})]

    assert main(["restore", *paths, "--database-url", target]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "but not ['achievements', 'learner_profiles', 'lessons']" in err


def test_a_path_that_is_neither_a_document_nor_a_snapshot_is_refused(
    new_target: NewTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")

    target = new_target("sqlite")
    code = main(["restore", str(notes), str(tmp_path / "absent.json"), "--database-url", target])

    err = capsys.readouterr().err
    assert code == 1
    assert "notes.txt: is neither a snapshot directory nor a document file" in err
    assert "absent.json: does not exist" in err


def test_nothing_touches_the_target_when_every_file_fails_its_checksum(
    sqlite_exports: dict[int, bytes],
    new_target: NewTarget,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    snapshot = make_snapshot(tmp_path / "snap", {3: sqlite_exports[3]})
    damaged = snapshot / "learner-data-3-2024-01-15.json"
    damaged.write_bytes(damaged.read_bytes().replace(b'"id":3', b'"id":4', 1))
    target = new_target("sqlite")

    assert main(["restore", str(snapshot), "--database-url", target]) == 1

    assert "sha256 differs from the manifest" in capsys.readouterr().err
    assert not Path(target.removeprefix("sqlite:///")).exists()
