"""load.files: whole files or nothing, private, checksummed."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from load.errors import TerminalLoadError
from load.files import AtomicBatch, write_atomic


def test_writes_the_bytes_and_reports_size_and_sha256(tmp_path: Path) -> None:
    written = write_atomic(tmp_path / "out", "doc.json", b'{"a":1}')
    assert written.path == tmp_path / "out" / "doc.json"
    assert written.path.read_bytes() == b'{"a":1}'
    assert written.size == 7
    assert written.sha256 == hashlib.sha256(b'{"a":1}').hexdigest()


def test_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    written = write_atomic(tmp_path, "doc.json", b"{}")
    assert stat.S_IMODE(written.path.stat().st_mode) == 0o600


def test_an_existing_file_is_replaced_whole_and_no_temporary_is_left(tmp_path: Path) -> None:
    write_atomic(tmp_path, "doc.json", b"old and longer")
    write_atomic(tmp_path, "doc.json", b"new")
    assert (tmp_path / "doc.json").read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_a_failed_write_leaves_nothing_and_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "doc.json").mkdir()  # the target name is taken by a directory
    with pytest.raises(TerminalLoadError, match=r"writing .*doc\.json failed"):
        write_atomic(tmp_path, "doc.json", b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_an_unwritable_destination_is_terminal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TerminalLoadError):
        write_atomic(blocker / "sub", "doc.json", b"{}")


def test_a_batch_shows_nothing_under_final_names_before_commit(tmp_path: Path) -> None:
    batch = AtomicBatch(tmp_path)
    written = [batch.add(f"doc-{i}.json", b"x" * i) for i in range(3)]
    assert not any((tmp_path / f"doc-{i}.json").exists() for i in range(3))
    assert all(p.name.startswith(".doc-") and p.name.endswith(".tmp") for p in tmp_path.iterdir())
    batch.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc-0.json", "doc-1.json", "doc-2.json"]
    for i, file in enumerate(written):
        assert file.path.read_bytes() == b"x" * i
        assert file.sha256 == hashlib.sha256(b"x" * i).hexdigest()
        assert stat.S_IMODE(file.path.stat().st_mode) == 0o600


def test_a_batch_interrupted_by_an_error_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), AtomicBatch(tmp_path) as batch:
        batch.add("a.json", b"{}")
        raise RuntimeError("the chunk failed")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_commit_names_the_path_and_removes_temporaries(tmp_path: Path) -> None:
    (tmp_path / "b.json").mkdir()  # the rename of b.json cannot happen
    with pytest.raises(TerminalLoadError, match=r"b\.json"), AtomicBatch(tmp_path) as batch:
        batch.add("a.json", b"{}")
        batch.add("b.json", b"{}")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
