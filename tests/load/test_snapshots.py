"""`load.snapshots`: the manifest interface, and files checked against it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from load.snapshots import (
    ManifestEntry,
    SnapshotError,
    check_entry,
    read_manifest,
    verify_entry,
)

DATA = b'{"learner":{"id":3}}'


def snapshot_with(tmp_path: Path, files: Any) -> Path:
    (tmp_path / "manifest.json").write_bytes(orjson.dumps({"files": files}))
    return tmp_path


def good_entry(**changes: Any) -> dict[str, Any]:
    entry = {
        "path": "learner-data-3-2024-01-15.json",
        "learner_id": 3,
        "bytes": len(DATA),
        "sha256": hashlib.sha256(DATA).hexdigest(),
        "written_at": "ignored",
    }
    entry.update(changes)
    return entry


def test_document_entries_are_read_in_manifest_order_and_other_files_ignored(
    tmp_path: Path,
) -> None:
    snapshot = snapshot_with(
        tmp_path,
        [
            good_entry(lessons_total=1050, truncated=True),
            {"path": "tables/lessons.parquet", "bytes": 10, "sha256": "0" * 64},
            good_entry(path="b.json", learner_id="4"),
        ],
    )

    first, second = read_manifest(snapshot)

    assert first == ManifestEntry(
        path=snapshot / "learner-data-3-2024-01-15.json",
        learner_id=3,
        size=len(DATA),
        sha256=hashlib.sha256(DATA).hexdigest(),
        lessons_total=1050,
        truncated=True,
    )
    assert second.learner_id == 4 and second.truncated is None


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ("nope", "has no 'files' list"),
        (["x"], r"files\[0\] is not an object"),
        ([good_entry(path="/etc/learner-data-3.json")], "relative path inside the snapshot"),
        ([good_entry(path="../other/x.json")], "relative path inside the snapshot"),
        ([good_entry(learner_id="three")], "'learner_id' must be an integer"),
        ([good_entry(learner_id=0)], "'learner_id' must be an integer of at least 1"),
        ([good_entry(bytes=-1)], "'bytes' must be an integer of at least 0"),
        ([good_entry(sha256="abc")], "'sha256' must be 64 hex digits"),
        ([good_entry(), good_entry(path="again.json")], "lists learner 3 twice"),
    ],
)
def test_a_manifest_that_cannot_be_trusted_is_an_error(
    tmp_path: Path, files: Any, message: str
) -> None:
    with pytest.raises(SnapshotError, match=message):
        read_manifest(snapshot_with(tmp_path, files))


def test_no_manifest_or_invalid_json_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="not a snapshot"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(SnapshotError, match="is not valid JSON"):
        read_manifest(tmp_path)


def test_files_are_checked_for_presence_size_and_checksum(tmp_path: Path) -> None:
    (entry,) = read_manifest(snapshot_with(tmp_path, [good_entry()]))

    assert verify_entry(entry) == "is missing from the snapshot"
    entry.path.write_bytes(DATA)
    assert verify_entry(entry) is None
    assert check_entry(entry, DATA) is None
    entry.path.write_bytes(DATA.replace(b"3", b"4"))
    assert "sha256 checksum mismatch" in str(verify_entry(entry))
    assert "sha256 checksum mismatch" in str(check_entry(entry, entry.path.read_bytes()))
    entry.path.write_bytes(DATA + b" ")
    assert "the manifest lists" in str(verify_entry(entry))
