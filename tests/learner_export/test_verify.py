"""`learner-export verify`: every way a snapshot can disagree with its manifest is reported, by
path and check, and a sound snapshot passes.

The snapshots are made as the archive writes them (`tests.restore_helpers.make_snapshot`, plus one
Parquet part), then damaged. Where a damage must reach a check behind the size and sha256 (the
decoder, the JSON, the schema, the learner, the Parquet footer), the manifest is made to agree with
the damaged file first (`relisted`), as a careless or hostile writer would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.fernet import Fernet

from learner_export.cli import main
from learner_export.settings import get_settings
from learner_export.verify import VerifyReport, verify_snapshot
from load.destination import open_snapshot
from load.manifest import (
    MANIFEST_NAME,
    Manifest,
    ParquetPartEntry,
    ParquetTable,
    manifest_pieces,
    to_json,
)
from load.snapshot_files import MISSING, SnapshotNotFound
from tests.restore_helpers import edited, make_snapshot

LEARNERS = (3, 6)
PART = "parquet/learners/part-00000.parquet"
SHA_DIFFERS = "sha256 differs from the manifest: the file is damaged or not the one listed"


def document_name(learner_id: int, suffix: str = "") -> str:
    """The file name `make_snapshot` gives a learner's document."""
    return f"learner-data-{learner_id}-2024-01-15.json{suffix}"


def read_manifest(snapshot: Path) -> Manifest:
    return Manifest.model_validate_json((snapshot / MANIFEST_NAME).read_bytes())


def write_manifest(snapshot: Path, manifest: Manifest) -> None:
    (snapshot / MANIFEST_NAME).write_bytes(to_json(manifest))


def stored(path: Path) -> dict[str, int | str]:
    """The manifest fields that describe a file as stored."""
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def relisted(snapshot: Path, *, parquet_rows: int | None = None) -> None:
    """Make the manifest agree with the files as they are now (sizes and checksums; and each
    Parquet part's row count is set to `parquet_rows` when given)."""
    manifest = read_manifest(snapshot)
    files = [entry.model_copy(update=stored(snapshot / entry.path)) for entry in manifest.files]
    parquet = {}
    for name, table in manifest.parquet.items():
        rows = {} if parquet_rows is None else {"rows": parquet_rows}
        parts = [
            part.model_copy(update=stored(snapshot / part.path) | rows) for part in table.parts
        ]
        parquet[name] = table.model_copy(update={"parts": parts})
    write_manifest(snapshot, manifest.model_copy(update={"files": files, "parquet": parquet}))


def add_parquet_part(snapshot: Path, learner_ids: tuple[int, ...]) -> None:
    """A Parquet part of one row per learner, listed in the manifest as the archive lists it."""
    part = snapshot / PART
    part.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"learner_id": list(learner_ids)}), part)
    entry = ParquetPartEntry.model_validate(
        {"table": "learners", "path": PART, "rows": len(learner_ids)} | stored(part)
    )
    table = ParquetTable(rows=entry.rows, parts=[entry])
    write_manifest(
        snapshot, read_manifest(snapshot).model_copy(update={"parquet": {"learners": table}})
    )


def verify(snapshot: Path, fernet: Fernet | None = None) -> VerifyReport:
    fs, directory = open_snapshot(str(snapshot))
    return verify_snapshot(fs, directory, fernet)


@pytest.fixture
def snapshot(sqlite_exports: dict[int, bytes], tmp_path: Path) -> Path:
    """A sound snapshot: two learners' documents and one Parquet part, all listed."""
    directory = make_snapshot(tmp_path / "snap", {i: sqlite_exports[i] for i in LEARNERS})
    add_parquet_part(directory, LEARNERS)
    return directory


def test_a_sound_snapshot_has_no_problems(snapshot: Path) -> None:
    report = verify(snapshot)
    assert (report.documents, report.parquet_parts, report.problems) == (2, 1, [])


def test_without_a_manifest_nothing_is_checked(snapshot: Path) -> None:
    (snapshot / MANIFEST_NAME).unlink()
    report = verify(snapshot)
    assert report.problems == ["not a finished snapshot (no manifest.json)"]
    assert (report.documents, report.parquet_parts) == (0, 0)


def _duplicate_entry(manifest: dict[str, Any]) -> None:
    manifest["files"].append(manifest["files"][0])


def _escaping_path(manifest: dict[str, Any]) -> None:
    manifest["files"][0]["path"] = "../../another-family/alice-secret.json"


def _no_files(manifest: dict[str, Any]) -> None:
    del manifest["files"]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_duplicate_entry, "learner 3 is listed twice or out of order"),
        (_escaping_path, "files.0.path: Value error, must be a relative path inside the snapshot"),
        (_no_files, "files: Field required"),
    ],
)
def test_a_manifest_that_cannot_be_trusted_is_one_problem_and_nothing_else_is_checked(
    snapshot: Path, damage: Callable[[dict[str, Any]], None], reason: str
) -> None:
    manifest = orjson.loads((snapshot / MANIFEST_NAME).read_bytes())
    damage(manifest)
    (snapshot / MANIFEST_NAME).write_bytes(orjson.dumps(manifest))
    report = verify(snapshot)
    assert report.problems == [f"manifest.json is not a valid manifest ({reason})"]
    assert report.documents == 0
    assert "alice" not in report.problems[0]  # the offending value is never quoted


def test_a_streamed_manifest_is_trusted_only_once_its_last_entry_is_read(snapshot: Path) -> None:
    """The archive writes the entries one per line (`manifest_pieces`) and verify streams them:
    a damaged last entry is still one problem, found before any file is checked."""
    manifest = read_manifest(snapshot)
    streamed = b"".join(manifest_pieces(manifest.head(), manifest.files))
    (snapshot / MANIFEST_NAME).write_bytes(streamed)
    assert verify(snapshot).problems == []
    damaged = streamed.replace(b'"learner_id":6', b'"learner_id":"six"')
    (snapshot / MANIFEST_NAME).write_bytes(damaged)
    report = verify(snapshot)
    assert report.problems == [
        "manifest.json is not a valid manifest (files.1.learner_id: Input should be a valid "
        "integer, unable to parse string as an integer)"
    ]
    assert (report.documents, report.parquet_parts) == (0, 0)


def test_a_manifest_that_is_not_json_is_one_problem(snapshot: Path) -> None:
    (snapshot / MANIFEST_NAME).write_bytes(b'{"run_id": "2024-01-15", ')
    (problem,) = verify(snapshot).problems
    assert problem.startswith("manifest.json is not a valid manifest (Invalid JSON")


def test_files_the_manifest_does_not_list_are_reported(
    snapshot: Path, sqlite_exports: dict[int, bytes]
) -> None:
    (snapshot / document_name(7)).write_bytes(sqlite_exports[7])
    (snapshot / "notes.txt").write_bytes(b"left behind")
    (snapshot / "parquet/learners/part-00001.parquet").write_bytes((snapshot / PART).read_bytes())
    assert verify(snapshot).problems == [
        f"{document_name(7)}: not listed in the manifest",
        "notes.txt: not listed in the manifest",
        "parquet/learners/part-00001.parquet: not listed in the manifest",
    ]


def test_listed_files_that_are_missing_are_reported(snapshot: Path) -> None:
    (snapshot / document_name(6)).unlink()
    (snapshot / PART).unlink()
    report = verify(snapshot)
    assert report.problems == [f"{document_name(6)}: {MISSING}", f"{PART}: {MISSING}"]
    assert (report.documents, report.parquet_parts) == (2, 1)


def test_a_file_of_another_size_is_reported_with_both_sizes(snapshot: Path) -> None:
    path = snapshot / document_name(3)
    size = path.stat().st_size
    with path.open("ab") as handle:
        handle.write(b"\n")
    assert verify(snapshot).problems == [
        f"{document_name(3)}: is {size + 1} bytes, the manifest lists {size}"
    ]


def test_a_file_of_the_same_size_but_other_bytes_fails_its_checksum(snapshot: Path) -> None:
    path = snapshot / document_name(6)
    data = bytearray(path.read_bytes())
    data[200] ^= 0x01  # one bit flipped: still valid JSON, same size
    path.write_bytes(bytes(data))
    assert verify(snapshot).problems == [f"{document_name(6)}: {SHA_DIFFERS}"]


def test_a_listed_file_that_is_not_json_is_reported(snapshot: Path) -> None:
    (snapshot / document_name(3)).write_bytes(b'{"learner": {"id": 3, ')
    relisted(snapshot)
    assert verify(snapshot).problems == [f"{document_name(3)}: not valid JSON"]


def test_a_schema_failure_names_the_pointer_and_the_keyword_never_the_value(
    snapshot: Path, sqlite_exports: dict[int, bytes]
) -> None:
    changes = [
        (("learner", "createdAt"), "Alice's birthday"),
        (("learner", "password"), "hunter2"),
        (("lessons",), "all of Alice's lessons"),
    ]
    (snapshot / document_name(3)).write_bytes(edited(sqlite_exports[3], changes))
    relisted(snapshot)
    problems = verify(snapshot).problems
    assert problems == [
        f"{document_name(3)}: schema: /learner: Additional properties are not allowed "
        "('password' was unexpected)",
        f"{document_name(3)}: schema: /learner/createdAt: fails 'anyOf'",
        f"{document_name(3)}: schema: /lessons: fails 'type'",
    ]
    assert not any("Alice" in p or "hunter2" in p for p in problems)


def test_a_document_of_another_learner_is_reported(
    snapshot: Path, sqlite_exports: dict[int, bytes]
) -> None:
    (snapshot / document_name(3)).write_bytes(sqlite_exports[6])  # valid, but learner 6's
    relisted(snapshot)
    assert verify(snapshot).problems == [f"{document_name(3)}: is not the document of learner 3"]


@pytest.mark.parametrize(
    ("suffix", "reason"),
    [
        (".gz", "is not valid gzip data (damaged or truncated)"),
        (".zst", "is not valid Zstandard data (truncated)"),
    ],
)
def test_truncated_compressed_data_is_reported(
    sqlite_exports: dict[int, bytes], tmp_path: Path, suffix: str, reason: str
) -> None:
    snapshot = make_snapshot(tmp_path / "snap", {3: sqlite_exports[3]}, suffix=suffix)
    path = snapshot / document_name(3, suffix)
    path.write_bytes(path.read_bytes()[:-20])
    relisted(snapshot)
    assert verify(snapshot).problems == [f"{document_name(3, suffix)}: {reason}"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("none", "encrypted, and no encryption key is configured to check it"),
        ("wrong", "cannot be decrypted: wrong key, or the file was altered"),
        ("right", None),
    ],
)
def test_encrypted_documents_are_checked_only_with_their_key(
    sqlite_exports: dict[int, bytes], tmp_path: Path, key: str, reason: str | None
) -> None:
    right = Fernet.generate_key()
    documents = {i: sqlite_exports[i] for i in LEARNERS}
    snapshot = make_snapshot(tmp_path / "snap", documents, suffix=".zst.enc", key=right)
    fernet = {"none": None, "wrong": Fernet(Fernet.generate_key()), "right": Fernet(right)}[key]
    expected = (
        [] if reason is None else [f"{document_name(i, '.zst.enc')}: {reason}" for i in LEARNERS]
    )
    assert verify(snapshot, fernet).problems == expected


def test_a_parquet_part_whose_footer_disagrees_with_the_manifest_is_reported(
    snapshot: Path,
) -> None:
    relisted(snapshot, parquet_rows=3)  # the part holds 2 rows; size and sha256 match
    assert verify(snapshot).problems == [f"{PART}: 2 rows, the manifest says 3"]


def test_a_replaced_parquet_part_is_reported_with_its_rows_too(snapshot: Path) -> None:
    pq.write_table(pa.table({"learner_id": [3, 6, 7, 8]}), snapshot / PART)
    problems = verify(snapshot).problems
    assert len(problems) == 2
    assert problems[0].startswith(f"{PART}: is ") and "the manifest lists" in problems[0]
    assert problems[1] == f"{PART}: 4 rows, the manifest says 2"


def test_a_listed_part_that_is_not_parquet_is_reported(snapshot: Path) -> None:
    (snapshot / PART).write_bytes(b"PAR1 not really")
    relisted(snapshot)
    assert verify(snapshot).problems == [f"{PART}: not a readable Parquet file"]


def test_every_problem_is_reported_not_only_the_first(snapshot: Path) -> None:
    (snapshot / document_name(3)).unlink()
    (snapshot / document_name(6)).write_bytes(b"[]")
    (snapshot / PART).write_bytes(b"")
    (snapshot / "stray.json").write_bytes(b"{}")
    problems = verify(snapshot).problems
    assert [problem.split(":")[0] for problem in problems] == [
        document_name(3),
        document_name(6),
        PART,  # its size, and it is no Parquet file
        PART,
        "stray.json",
    ]


# --- the command ----------------------------------------------------------------------------


def test_the_command_prints_each_mismatch_then_one_error_and_exits_1(
    snapshot: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(snapshot)]) == 0
    assert capsys.readouterr().out == (
        f"{snapshot}: ok, 2 documents and 1 Parquet parts match the manifest\n"
    )

    (snapshot / document_name(6)).unlink()
    (snapshot / "notes.txt").write_bytes(b"")
    assert main(["verify", str(snapshot)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"learner-export: mismatch: {document_name(6)}: {MISSING}",
        "learner-export: mismatch: notes.txt: not listed in the manifest",
        f"learner-export: error: {snapshot}: 2 mismatch(es) with the manifest",
    ]


def test_the_command_checks_encrypted_documents_with_the_configured_key(
    sqlite_exports: dict[int, bytes],
    tmp_path: Path,
    fernet_key: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    documents = {i: sqlite_exports[i] for i in LEARNERS}
    snapshot = make_snapshot(tmp_path / "snap", documents, suffix=".gz.enc", key=fernet_key)
    assert main(["verify", str(snapshot)]) == 0
    assert "ok, 2 documents" in capsys.readouterr().out


def test_the_command_with_a_key_that_is_not_a_fernet_key_is_one_line(
    snapshot: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEARNER_EXPORT_ENCRYPTION_KEY", "not-a-key")
    get_settings.cache_clear()
    assert main(["verify", str(snapshot)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("learner-export: error: the configured encryption key")
    assert "not-a-key" not in err


def test_a_snapshot_directory_that_does_not_exist_is_one_error_not_a_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-run"
    with pytest.raises(SnapshotNotFound):
        verify_snapshot(*open_snapshot(str(missing)), None)

    assert main(["verify", str(missing)]) == 1
    assert (
        capsys.readouterr().err == f"learner-export: error: {missing}: no such snapshot directory\n"
    )
