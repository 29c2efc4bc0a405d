"""Snapshots in an object store: the archive, its readers, verify, restore and retention against a
real S3 API (moto's server, `tests/s3.py`), and a run killed mid-upload that resumes.

The destination is `s3://<bucket>/learners`; the endpoint and keys reach s3fs only through the
standard AWS variables (the `s3_destination` fixture), as they would on a real deployment.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from learner_export.cli import main
from learner_export.verify import verify_snapshot
from load.codec import decode_stored
from load.destination import open_destination, open_snapshot, published_runs
from load.manifest import MANIFEST_NAME
from tests.conftest import DemoSource, NewTarget, PrefectServer, S3Destination
from tests.flows.conftest import run_archive
from tests.restore_helpers import export_all

pytestmark = pytest.mark.slow

CLI = Path(sys.executable).parent / "learner-export"
PSEUDONYM_KEY = "s3-test-pseudonym-key-0123456789"


class Reader(threading.Thread):
    """Lists the destination again and again, as a reader of the bucket would, keeping every
    listing, until stopped."""

    def __init__(self, destination: S3Destination) -> None:
        super().__init__(daemon=True)
        self.destination = destination
        self.listings: list[list[str]] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(0.01):  # leave moto's server time for the run's requests
            self.listings.append(self.destination.keys())

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=30)


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_a_snapshot_in_s3_is_published_whole_verified_restored_and_retained(
    sqlite_demo: DemoSource,
    s3_destination: S3Destination,
    prefect_server: PrefectServer,
    fernet_key: bytes,
    new_target: NewTarget,
    sqlite_exports: dict[int, bytes],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    learners = sqlite_demo.rows.learner_ids[:3]
    secrets = {"encryption_key": fernet_key.decode(), "pseudonym_key": PSEUDONYM_KEY}
    reader = Reader(s3_destination)
    reader.start()
    try:
        result = run_archive(
            sqlite_demo, s3_destination.url, secrets=secrets, run_id="first", learners=learners,
            chunk_size=3, compress="zstd", encrypt=True, parquet=True,
        )  # fmt: skip
    finally:
        reader.stop()
    assert (result.status, result.counts.files) == ("complete", 3)
    published = s3_destination.keys("first/")
    assert "first/manifest.json" in published
    assert any(k.startswith("first/parquet/") for k in published)
    assert all(".zst.enc" in k for k in published if "learner-data-" in k)

    # The reader listed throughout the run: the unfinished run under .incomplete/, then the
    # snapshot's objects arriving; manifest.json only ever with every other object beside it.
    assert any(any(k.startswith(".incomplete/first/") for k in keys) for keys in reader.listings)
    arriving = [keys for keys in reader.listings if "first/schema.json" in keys]
    assert any("first/manifest.json" not in keys for keys in arriving)  # caught mid-publish
    for keys in reader.listings:
        if "first/manifest.json" in keys:
            assert set(published) <= set(keys)

    # Every object carries the CRC32 botocore computed from the bytes it sent, and it matches.
    client = s3_destination.server.client()
    for key in published:
        full = f"learners/{key}"
        head = client.head_object(Bucket=s3_destination.bucket, Key=full, ChecksumMode="ENABLED")
        body = client.get_object(Bucket=s3_destination.bucket, Key=full)["Body"].read()
        assert head["ChecksumCRC32"] == _crc32(body), key

    snapshot = f"{s3_destination.url}/first"
    assert main(["verify", snapshot]) == 0, capsys.readouterr().err

    # The analyst report reads the snapshot where it is: the figures of a local copy's report.
    fs, directory = open_snapshot(snapshot)
    copy = tmp_path / "copy"
    for path in fs.find(directory):
        local = copy / path.removeprefix(directory).lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(fs.cat_file(path))
    pages = []
    for source, out in ((snapshot, tmp_path / "s3.html"), (str(copy), tmp_path / "local.html")):
        code = main(["report", source, "--out", str(out), "--min-cell", "1"])
        assert code == 0, capsys.readouterr().err
        pages.append(re.findall(r"data-value='[^']*'", out.read_text()))
    assert pages[0] and pages[0] == pages[1]
    target = new_target("sqlite")
    assert main(["restore", snapshot, "--database-url", target]) == 0, capsys.readouterr().err
    assert "summary: 3 restored, 0 skipped, 0 refused" in capsys.readouterr().out
    restored = export_all(target)
    assert {i: restored[i] for i in learners} == {i: sqlite_exports[i] for i in learners}

    # Retention: two more runs keeping two; the oldest goes, with its record under .deleted/.
    for run_id in ("second", "third"):
        run_archive(sqlite_demo, s3_destination.url, run_id=run_id, learners=learners[:1], keep=2)
    assert published_runs(open_destination(s3_destination.url)) == ["second", "third"]
    assert s3_destination.keys("first/") == []
    assert s3_destination.keys(".deleted/") == [".deleted/first.json"]
    assert s3_destination.keys(".incomplete/") == []
    fs, directory = open_snapshot(f"{s3_destination.url}/third")
    assert verify_snapshot(fs, directory, None).problems == []


def _documents(destination: S3Destination, run_id: str) -> dict[str, object]:
    """The run's documents decoded, exportDate and exportedBy set aside, by learner id."""
    fs, directory = open_snapshot(f"{destination.url}/{run_id}")
    documents = {}
    for key in destination.keys(f"{run_id}/learner-data-"):
        name = key.rsplit("/", 1)[1]
        document = orjson.loads(decode_stored(name, fs.cat_file(f"{directory}/{name}")))
        documents[str(document["learner"]["id"])] = _aside(document)
    return documents


def _aside(document: dict[str, object]) -> dict[str, object]:
    document.pop("exportDate")
    document.pop("exportedBy")
    return document


def _wait_for(process: subprocess.Popen[bytes], count: Callable[[], int], at_least: int) -> None:
    for _ in range(60_000):  # every 5 ms: only a run that hangs exhausts it
        if count() >= at_least or process.poll() is not None:
            return
        time.sleep(0.005)
    pytest.fail(f"the archive neither got to {at_least} nor exited")


def test_a_run_killed_mid_upload_resumes_to_the_same_documents(
    sqlite_demo: DemoSource, s3_destination: S3Destination, prefect_server: PrefectServer
) -> None:
    learners = sqlite_demo.rows.learner_ids[:6]
    command = [
        str(CLI), "archive", "--no-parquet", "--chunk-size", "1", "--workers", "1",
        "--compress", "gzip", "--run-id", "nightly", "--dest", s3_destination.url,
        "--learners", ",".join(map(str, learners)),
    ]  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": prefect_server.url, "DATABASE_URL": sqlite_demo.url}

    def parts() -> int:  # chunks recorded finished: part records survive a kill
        return len(s3_destination.keys(".incomplete/nightly/parts/"))

    def written() -> int:  # objects of the unfinished run: documents and records
        return len(s3_destination.keys(".incomplete/nightly/"))

    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    _wait_for(process, parts, 2)
    _wait_for(process, written, written() + 1)  # the next chunk's upload is under way
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = parts()
    assert 0 < killed_at < len(learners), "the kill missed the run"
    assert s3_destination.keys("nightly/") == []  # nothing published

    # The same options again, here in this process (the command's options, as the flow takes
    # them): it finishes the killed run.
    final = run_archive(
        sqlite_demo, s3_destination.url, run_id="nightly", learners=learners, chunk_size=1,
        compress="gzip",
    )  # fmt: skip
    assert (final.status, final.chunks_run) == ("complete", len(learners) - killed_at)
    expected = {
        str(i): _aside(orjson.loads(document))
        for i, document in export_all(sqlite_demo.url).items()
        if i in learners
    }
    assert _documents(s3_destination, "nightly") == expected
    assert s3_destination.keys(".incomplete/") == []
    fs, directory = open_snapshot(f"{s3_destination.url}/nightly")
    assert verify_snapshot(fs, directory, None).problems == []
    listed = {f["path"] for f in orjson.loads(fs.cat_file(f"{directory}/{MANIFEST_NAME}"))["files"]}
    assert {k.removeprefix("nightly/") for k in s3_destination.keys("nightly/learner-")} == listed
