from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from load.destination import (
    MANIFEST_NAME,
    Destination,
    check_run_id,
    delete_snapshot,
    list_files,
    open_destination,
    publish,
    published_runs,
    read_if_exists,
    remove_empty_dirs,
    write_file,
)
from load.errors import TerminalLoadError
from tests.conftest import S3Destination


@pytest.fixture(params=["local", "memory", "s3"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Destination:
    if request.param == "local":
        return open_destination(str(tmp_path / "dest"))
    if request.param == "s3":  # moto's S3 server (tests/s3.py)
        return open_destination(request.getfixturevalue("s3_destination").url)
    return open_destination(f"memory://test-{uuid.uuid4().hex}")


def test_an_object_store_is_listed_anew_not_from_a_cache(s3_destination: S3Destination) -> None:
    """Files another process wrote (a Dask worker, another run) are seen at once: a listing made
    before they were written is not reused."""
    destination = open_destination(s3_destination.url)
    directory = f"{destination.root}/.incomplete/run/parts"
    write_file(destination.fs, f"{directory}/00000.json", b"{}")
    assert list_files(destination.fs, directory) == ["00000.json"]
    assert published_runs(destination) == []
    other = s3_destination.server.client()  # another writer, unknown to this process's fsspec
    root = destination.root.removeprefix(f"{s3_destination.bucket}/")
    other.put_object(
        Bucket=s3_destination.bucket, Key=f"{root}/.incomplete/run/parts/00001.json", Body=b"{}"
    )
    other.put_object(Bucket=s3_destination.bucket, Key=f"{root}/run/{MANIFEST_NAME}", Body=b"{}")
    again = open_destination(s3_destination.url)
    assert list_files(again.fs, directory) == ["00000.json", "00001.json"]
    assert published_runs(again) == ["run"]


def test_write_file_reports_size_and_hash(destination: Destination) -> None:
    path = f"{destination.root}/a/b.json"
    stored = write_file(destination.fs, path, b"{}")
    assert (stored.bytes, stored.sha256) == (2, hashlib.sha256(b"{}").hexdigest())
    assert read_if_exists(destination.fs, path) == b"{}"
    assert read_if_exists(destination.fs, f"{destination.root}/a/missing.json") is None


def test_publish_moves_the_run_with_its_manifest(destination: Destination) -> None:
    run_dir = destination.incomplete_dir("r1")
    for name in ("doc.json", "parquet/t/part-00000.parquet", MANIFEST_NAME):
        write_file(destination.fs, f"{run_dir}/{name}", name.encode())
    assert published_runs(destination) == []
    target = publish(destination, "r1")
    assert list_files(destination.fs, target) == sorted(
        ["doc.json", "parquet/t/part-00000.parquet", MANIFEST_NAME]
    )
    assert list_files(destination.fs, run_dir) == []
    assert published_runs(destination) == ["r1"]
    assert publish(destination, "r1") == target  # repeating it is harmless


def test_a_directory_without_manifest_is_not_a_snapshot(destination: Destination) -> None:
    write_file(destination.fs, f"{destination.snapshot_dir('half')}/doc.json", b"{}")
    write_file(destination.fs, f"{destination.snapshot_dir('whole')}/{MANIFEST_NAME}", b"{}")
    assert published_runs(destination) == ["whole"]


def test_delete_snapshot_records_the_deletion(destination: Destination) -> None:
    write_file(destination.fs, f"{destination.snapshot_dir('old')}/{MANIFEST_NAME}", b"{}")
    delete_snapshot(destination, "old", b'{"run_id": "old"}')
    assert published_runs(destination) == []
    assert (
        read_if_exists(destination.fs, f"{destination.root}/.deleted/old.json")
        == b'{"run_id": "old"}'
    )


def test_remove_empty_dirs_keeps_files(tmp_path: Path) -> None:
    destination = open_destination(str(tmp_path))
    write_file(destination.fs, f"{destination.root}/keep/x.json", b"1")
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    remove_empty_dirs(destination.fs, destination.root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


@pytest.mark.parametrize("run_id", ["", ".incomplete", "../x", "a/b", "x" * 81, "a b"])
def test_unsafe_run_ids_are_refused(run_id: str) -> None:
    with pytest.raises(TerminalLoadError, match="run id"):
        check_run_id(run_id)


def test_writing_where_a_file_blocks_the_directory_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    destination = open_destination(str(tmp_path / "blocker"))
    with pytest.raises(TerminalLoadError, match="blocker"):
        write_file(destination.fs, f"{destination.root}/doc.json", b"{}")


@pytest.mark.parametrize(
    "url", ["nosuchproto://host/x", "nosuchproto://x/hunter2", "s3://[hunter2/x"]
)
def test_a_destination_that_cannot_open_is_reported_without_the_url(url: str) -> None:
    with pytest.raises(TerminalLoadError, match="cannot open the destination") as caught:
        open_destination(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["nosuchproto://user:hunter2@host/x", "s3://key:hunter2@bucket/x", "s3://hunter2@b/x"]
)
def test_a_url_holding_credentials_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(TerminalLoadError, match="must not hold credentials") as caught:
        open_destination(url)
    assert "hunter2" not in str(caught.value)
