"""The `learner-export restore` command: what it prints, and its exit status.

Every test restores into a new SQLite target through the `restore` fixture, which runs the
command in this process and hands back what it printed.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from learner_export.cli import main
from load.manifest import MANIFEST_NAME
from tests.conftest import NewTarget
from tests.restore_helpers import (
    connected,
    edited,
    export_all,
    learner_row_counts,
    make_snapshot,
    write_documents,
)

Exports = dict[int, bytes]
"""Documents by learner id, as the `sqlite_exports` fixture holds them."""


@dataclass(frozen=True)
class Run:
    """One run of the command: its exit status and what it printed."""

    code: int
    out: str
    err: str


@dataclass(frozen=True)
class Restore:
    """`restore(*arguments)` runs `learner-export restore ARGUMENTS --database-url TARGET` in this
    process, into the new SQLite database `target`."""

    target: str
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *arguments: str | Path) -> Run:
        code = main(["restore", *map(str, arguments), "--database-url", self.target])
        out, err = self.capsys.readouterr()
        return Run(code, out, err)

    @property
    def database(self) -> Path:
        """The target's file (it does not exist until a run creates it)."""
        return Path(self.target.removeprefix("sqlite:///"))


@pytest.fixture
def restore(new_target: NewTarget, capsys: pytest.CaptureFixture[str]) -> Restore:
    return Restore(new_target("sqlite"), capsys)


@pytest.fixture
def learner_3(sqlite_exports: Exports, tmp_path: Path) -> Path:
    """Learner 3's document, as a plain file (its parent, user 1, is not in it)."""
    (path,) = write_documents(tmp_path / "learner-3", {3: sqlite_exports[3]})
    return path


def personal_values(document: bytes) -> list[str]:
    learner = orjson.loads(document)["learner"]
    return [learner[key] for key in ("username", "email", "name") if learner[key]]


def test_restore_writes_every_learner_and_says_passwords_must_be_reset(
    sqlite_exports: Exports, restore: Restore, tmp_path: Path
) -> None:
    run = restore(*write_documents(tmp_path, sqlite_exports))

    assert run.code == 0
    assert "created the contract's tables" in run.out
    assert f"summary: {len(sqlite_exports)} restored, 0 skipped, 0 refused" in run.out
    assert (
        "password reset" in run.err and f"the {len(sqlite_exports)} learner account(s)" in run.err
    )
    assert "learner 4 was truncated at export" in run.err
    assert export_all(restore.target) == sqlite_exports
    assert stat.S_IMODE(restore.database.stat().st_mode) == 0o600
    for document in sqlite_exports.values():
        for value in personal_values(document):
            assert value not in run.out + run.err


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst.enc"])
def test_restore_reads_files_and_snapshots_stored_either_way(
    sqlite_exports: Exports, restore: Restore, fernet_key: bytes, tmp_path: Path, suffix: str
) -> None:
    # Encrypted ones are read with the configured key (the fernet_key fixture sets it).
    files = write_documents(tmp_path, {3: sqlite_exports[3]}, suffix=suffix, key=fernet_key)
    snapshot = make_snapshot(
        tmp_path / "snap", {6: sqlite_exports[6]}, suffix=suffix, key=fernet_key
    )

    run = restore(*files, snapshot)

    assert run.code == 0, run.err
    assert "summary: 2 restored, 0 skipped, 0 refused" in run.out
    restored = export_all(restore.target)
    assert (restored[3], restored[6]) == (sqlite_exports[3], sqlite_exports[6])


def test_anything_refused_makes_the_exit_status_non_zero(
    sqlite_exports: Exports, restore: Restore, tmp_path: Path
) -> None:
    bad = edited(sqlite_exports[6], [(("lessons", 0, "createdAt"), "2024-02-30T10:00:00.000Z")])

    run = restore(*write_documents(tmp_path, {3: sqlite_exports[3], 6: bad}))

    assert run.code == 1
    assert "summary: 1 restored, 0 skipped, 1 refused" in run.out
    assert "refused learner 6 from" in run.err and "/lessons/0/createdAt" in run.err
    assert "learner-export: error: 1 refused; nothing was written for them" in run.err
    assert set(learner_row_counts(restore.target, 6).values()) == {0}


@pytest.mark.parametrize(
    ("options", "code", "summary"),
    [
        (["--on-conflict", "fail"], 1, "0 restored, 0 skipped, 1 refused"),
        (["--on-conflict", "skip"], 0, "0 restored, 1 skipped, 0 refused"),
        (["--on-conflict", "replace"], 0, "1 restored, 0 skipped, 0 refused"),
        ([], 1, "0 restored, 0 skipped, 1 refused"),
    ],
    ids=["fail", "skip", "replace", "fail-by-default"],
)
def test_on_conflict_decides_what_happens_to_a_learner_already_there(
    learner_3: Path,
    restore: Restore,
    tmp_path: Path,
    options: list[str],
    code: int,
    summary: str,
) -> None:
    """The target holds learner 3 as another document says (another name): the policy decides."""
    other = tmp_path / "other" / learner_3.name
    other.parent.mkdir()
    other.write_bytes(edited(learner_3.read_bytes(), [(("learner", "name"), "Another Name")]))
    assert restore(other).code == 0

    run = restore(learner_3, *options)

    assert run.code == code
    assert f"summary: {summary}" in run.out
    expected = learner_3 if "replace" in options else other
    assert export_all(restore.target)[3] == expected.read_bytes()


def test_the_same_restore_again_completes_without_refusing(
    learner_3: Path, restore: Restore
) -> None:
    """A learner the target already holds exactly (an earlier, interrupted run of the same
    restore) is skipped under the default --on-conflict fail: running it again completes."""
    assert restore(learner_3).code == 0

    again = restore(learner_3)

    assert again.code == 0
    assert again.out.endswith(
        "already restored, identical to the document\nsummary: 0 restored, 1 skipped, 0 refused\n"
    )
    assert export_all(restore.target)[3] == learner_3.read_bytes()


def test_missing_parent_fail_refuses_and_create_says_so(learner_3: Path, restore: Restore) -> None:
    refused = restore(learner_3, "--missing-parent", "fail")
    created = restore(learner_3)

    assert refused.code == 1
    assert "parent 1 is not in the target (--missing-parent fail)" in refused.err
    assert created.code == 0
    assert "created a placeholder PARENT account" in created.err


def test_the_target_url_is_required(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--database-url" in capsys.readouterr().err


def test_a_target_with_only_some_of_the_tables_is_refused_in_one_line(
    learner_3: Path, restore: Restore
) -> None:
    with connected(restore.target) as conn:
        conn.execute(sa.text("CREATE TABLE users (id integer PRIMARY KEY)"))
        conn.commit()

    run = restore(learner_3)

    assert run.code == 1
    assert run.err.count("\n") == 1
    assert "but not ['achievements', 'learner_profiles', 'lessons']" in run.err


# --- refused before the target is opened: nothing touches it, not even to create it -----------

Sources = Callable[[Path, Exports], list[Path]]
"""Writes the sources of a run into a directory; their paths."""


def neither_a_document_nor_a_snapshot(directory: Path, exports: Exports) -> list[Path]:
    notes = directory / "notes.txt"
    notes.write_text("hello")
    return [notes, directory / "absent.json"]


def a_snapshot_whose_file_fails_its_checksum(directory: Path, exports: Exports) -> list[Path]:
    snapshot = make_snapshot(directory / "snap", {3: exports[3]})
    damaged = snapshot / "learner-data-3-2024-01-15.json"
    damaged.write_bytes(damaged.read_bytes().replace(b'"id":3', b'"id":4', 1))
    return [snapshot]


def a_snapshot_without_its_manifest(directory: Path, exports: Exports) -> list[Path]:
    snapshot = make_snapshot(directory / "snap", {3: exports[3], 6: exports[6]})
    (snapshot / MANIFEST_NAME).unlink()
    return [snapshot]


REFUSED_BEFORE_WRITING: list[tuple[Sources, list[str]]] = [
    (
        neither_a_document_nor_a_snapshot,
        [
            "notes.txt: is neither a snapshot directory nor a document file",
            "absent.json: does not exist",
        ],
    ),
    (a_snapshot_whose_file_fails_its_checksum, ["sha256 differs from the manifest"]),
    (a_snapshot_without_its_manifest, ["snap: not a finished snapshot (no manifest.json)"]),
]


@pytest.mark.parametrize(
    ("sources", "errors"),
    REFUSED_BEFORE_WRITING,
    ids=[sources.__name__ for sources, _ in REFUSED_BEFORE_WRITING],
)
def test_sources_refused_before_anything_is_written_leave_the_target_untouched(
    sqlite_exports: Exports, restore: Restore, tmp_path: Path, sources: Sources, errors: list[str]
) -> None:
    run = restore(*sources(tmp_path, sqlite_exports))

    assert run.code == 1
    for error in errors:
        assert error in run.err
    assert "learner-export: error:" in run.err
    assert not restore.database.exists()
