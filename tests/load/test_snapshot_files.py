"""`load.snapshot_files`: a snapshot's manifest read with the model, and files checked against it."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
from fsspec.implementations.local import LocalFileSystem

from load.manifest import MANIFEST_NAME, FileEntry, ManifestError, manifest_pieces, to_json
from load.snapshot_files import (
    SnapshotError,
    SnapshotNotFound,
    bytes_problem,
    file_problem,
    read_entries,
    read_head,
    read_manifest,
    unlisted_files,
)
from tests.restore_helpers import manifest_of

DATA = b'{"learner":{"id":3}}'
FS = LocalFileSystem()


def good_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "path": "learner-data-3-2024-01-15.json",
        "learner_id": 3,
        "bytes": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "lessons_exported": 2,
        "lessons_total": 2,
        "truncated": False,
    }
    entry.update(changes)
    return entry


def snapshot_with(tmp_path: Path, files: list[dict[str, Any]], **top: Any) -> str:
    """A snapshot whose manifest is a valid one with these file entries (not validated here)."""
    manifest = orjson.loads(to_json(manifest_of([])))
    manifest.update(files=files, **top)
    (tmp_path / "manifest.json").write_bytes(orjson.dumps(manifest))
    return str(tmp_path)


def test_the_manifest_is_read_with_the_model_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    snapshot = snapshot_with(
        tmp_path,
        [good_entry(written_at="a newer writer's key"), good_entry(path="b.json", learner_id="4")],
        added_by_a_newer_version={"anything": 1},
    )

    manifest = read_manifest(FS, snapshot, "snap")

    assert manifest.files[0] == FileEntry.model_validate(good_entry())
    assert manifest.files[1].learner_id == 4  # an id written as text is still that id


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ("nope", r"files: Input should be a valid (list|array)"),
        (["x"], r"files\.0: Input should be (a valid dictionary|an object)"),
        ([good_entry(path="/etc/learner-data-3.json")], "relative path inside the snapshot"),
        ([good_entry(path="../other/x.json")], "relative path inside the snapshot"),
        ([good_entry(path="a\\b.json")], "relative path inside the snapshot"),
        ([good_entry(learner_id="three")], r"files\.0\.learner_id: Input should be a valid int"),
        ([good_entry(learner_id=0)], r"files\.0\.learner_id: Input should be greater than"),
        ([good_entry(bytes=-1)], r"files\.0\.bytes: Input should be greater than"),
        ([good_entry(sha256="abc")], r"files\.0\.sha256: String should match pattern"),
        ([good_entry(sha256="A" * 64)], r"files\.0\.sha256: String should match pattern"),
        ([{k: v for k, v in good_entry().items() if k != "sha256"}], r"sha256: Field required"),
        ([good_entry(), good_entry(path="again.json")], "learner 3 is listed twice"),
    ],
)
def test_a_manifest_that_cannot_be_trusted_is_an_error_naming_the_field(
    tmp_path: Path, files: Any, message: str
) -> None:
    with pytest.raises(SnapshotError, match=message) as caught:
        read_manifest(FS, snapshot_with(tmp_path, files), "snap")
    assert str(caught.value).startswith("snap: manifest.json is not a valid manifest (")


def test_a_refusal_never_quotes_the_offending_value(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError) as caught:
        read_manifest(FS, snapshot_with(tmp_path, [good_entry(learner_id="Alice Smith")]), "s")
    assert "Alice" not in str(caught.value)


def test_no_directory_no_manifest_or_invalid_json_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"^snap: no such snapshot directory$"):
        read_manifest(FS, str(tmp_path / "absent"), "snap")
    with pytest.raises(SnapshotError, match="snap: not a finished snapshot"):
        read_manifest(FS, str(tmp_path), "snap")
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(SnapshotError, match="Invalid JSON"):
        read_manifest(FS, str(tmp_path), "snap")


def test_files_are_checked_for_presence_size_and_checksum(tmp_path: Path) -> None:
    path, sha256 = tmp_path / "learner-data-3.json", hashlib.sha256(DATA).hexdigest()

    assert file_problem(FS, str(path), len(DATA), sha256) == "is missing from the snapshot"
    path.write_bytes(DATA)
    assert file_problem(FS, str(path), len(DATA), sha256) is None
    assert bytes_problem(DATA, len(DATA), sha256) is None
    path.write_bytes(DATA.replace(b"3", b"4"))
    assert "sha256 differs" in str(file_problem(FS, str(path), len(DATA), sha256))
    assert "sha256 differs" in str(bytes_problem(path.read_bytes(), len(DATA), sha256))
    path.write_bytes(DATA + b" ")
    assert "the manifest lists 20" in str(file_problem(FS, str(path), len(DATA), sha256))
    assert "the manifest lists 20" in str(bytes_problem(DATA + b" ", len(DATA), sha256))


def test_files_the_manifest_does_not_list_are_found(tmp_path: Path) -> None:
    snapshot = snapshot_with(tmp_path, [good_entry()])
    (tmp_path / "learner-data-3-2024-01-15.json").write_bytes(DATA)
    (tmp_path / "stray.txt").write_bytes(b"x")

    head, entries = read_head(FS, snapshot, "snap"), read_entries(FS, snapshot)

    assert unlisted_files(FS, snapshot, head, entries) == ["stray.txt"]


def streamed_snapshot(directory: Path, learners: int) -> str:
    """A snapshot whose manifest is written as the archive writes it (`manifest_pieces`),
    listing `learners` entries (their files are not written)."""
    head = manifest_of([]).head()
    entries = (
        FileEntry.model_validate(good_entry(learner_id=i, path=f"learner-data-{i}.json"))
        for i in range(1, learners + 1)
    )
    with (directory / MANIFEST_NAME).open("wb") as out:
        out.writelines(manifest_pieces(head, entries))
    return str(directory)


def test_the_head_and_the_entries_are_read_in_memory_that_does_not_grow_with_learners(
    tmp_path: Path,
) -> None:
    """20,000 entries (a 4.6 MB manifest; `read_manifest` peaks at 33 MB): the head and a pass
    over the entries, as `verify` makes them, hold less than a quarter of the manifest's text.
    The pass is made once untraced first: pydantic-core's cache of JSON strings fills then
    (bounded, some 250 KB), and is not the pass's."""
    snapshot = streamed_snapshot(tmp_path, 20_000)
    size = (tmp_path / MANIFEST_NAME).stat().st_size
    assert sum(1 for _ in read_entries(FS, snapshot)) == 20_000
    tracemalloc.start()
    try:
        head = read_head(FS, snapshot, "snap")
        unlisted = unlisted_files(FS, snapshot, head, read_entries(FS, snapshot))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert unlisted == [] and head == manifest_of([]).head()
    assert size > 4_000_000 and peak < size / 4


def test_a_streamed_manifest_with_an_entry_that_cannot_be_trusted_is_refused_by_its_entries(
    tmp_path: Path,
) -> None:
    snapshot = streamed_snapshot(tmp_path, 3)
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(path.read_bytes().replace(b'"path":"learner-data-3.json"', b'"path":"../x"'))
    assert read_head(FS, snapshot, "snap") == manifest_of([]).head()
    with pytest.raises(ManifestError, match=r"\(files\.2\.path: .*inside the snapshot\)$"):
        list(read_entries(FS, snapshot))
    path.write_bytes(path.read_bytes().replace(b'"run_id"', b'"run"'))
    with pytest.raises(SnapshotError, match=r"^snap: manifest.json is not a valid manifest \("):
        read_head(FS, snapshot, "snap")


def test_the_head_of_no_directory_or_no_manifest_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFound, match=r"^snap: no such snapshot directory$"):
        read_head(FS, str(tmp_path / "absent"), "snap")
    with pytest.raises(SnapshotError, match="snap: not a finished snapshot"):
        read_head(FS, str(tmp_path), "snap")
