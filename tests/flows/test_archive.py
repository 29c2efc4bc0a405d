"""The archive flow end to end, under a real Prefect server, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from cryptography.fernet import Fernet

from flows.archive import ARTIFACT_KEY, REPORT_ARTIFACT_KEY, export_learner
from flows.errors import OptionUnavailable, RunFailed
from flows.server import drain_prefect_queues
from learner_export.verify import verify_snapshot
from load.destination import open_destination, open_snapshot
from load.manifest import Manifest
from tests.conftest import DemoSource, PrefectServer
from tests.flows.conftest import run_archive

pytestmark = pytest.mark.usefixtures("prefect_server")


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_every_learner_gets_exactly_one_valid_document_and_the_manifest_verifies(
    demo_source: DemoSource, tmp_path: Path
) -> None:
    result = run_archive(demo_source, tmp_path, run_id="r1", chunk_size=5)
    snapshot = tmp_path / "r1"
    learners = demo_source.rows.learner_ids
    assert result.status == "complete"
    assert result.counts.files == result.counts.learners_requested == len(learners)
    assert result.truncated_learners == [learners[1]]
    assert result.chunks_run == 3
    manifest = Manifest.model_validate_json((snapshot / "manifest.json").read_bytes())
    assert sorted(f.learner_id for f in manifest.files) == sorted(learners)
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(
        [f.path for f in manifest.files] + ["manifest.json"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1"]  # nothing else left behind
    fs, directory = open_snapshot(str(snapshot))
    report = verify_snapshot(fs, directory, None)
    assert (report.documents, report.problems) == (len(learners), [])


def test_a_finished_run_appends_one_audit_line_per_learner(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    run_archive(sqlite_demo, tmp_path / "dest", run_id="a1", chunk_size=5, exported_by=2,
                audit_log=str(audit))  # fmt: skip
    manifest = Manifest.model_validate_json((tmp_path / "dest/a1/manifest.json").read_bytes())
    lines = [orjson.loads(line) for line in audit.read_bytes().splitlines()]
    by_learner = {line["learnerId"]: line for line in lines}
    assert len(lines) == len(by_learner) == len(sqlite_demo.rows.learner_ids)
    for entry in manifest.files:
        line = by_learner[entry.learner_id]
        assert (line["via"], line["userId"], line["status"]) == ("archive", 2, 200)
        assert (line["sha256"], line["bytes"]) == (entry.sha256, entry.bytes)
        assert line["truncated"] is entry.truncated
    names = [u["name"].encode() for u in sqlite_demo.rows.users]
    assert not any(name in audit.read_bytes() for name in names)
    again = run_archive(sqlite_demo, tmp_path / "dest", run_id="a1", chunk_size=5,
                        exported_by=2, audit_log=str(audit))  # fmt: skip
    assert again.status == "already-complete"
    assert len(audit.read_bytes().splitlines()) == len(lines)  # nothing was exported again


def test_running_again_after_a_finished_run_changes_nothing(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    run_archive(sqlite_demo, tmp_path, run_id="r1", chunk_size=4)
    before = _tree(tmp_path)
    again = run_archive(sqlite_demo, tmp_path, run_id="r1", chunk_size=4)
    assert again.status == "already-complete"
    assert again.chunks_run == 0
    assert _tree(tmp_path) == before


def test_an_object_store_destination_goes_through_the_same_code(sqlite_demo: DemoSource) -> None:
    url = f"memory://archive-{uuid.uuid4().hex}"
    result = run_archive(sqlite_demo, url, run_id="r1", compress="gzip", chunk_size=5)
    destination = open_destination(url)
    fs, directory = open_snapshot(f"{url}/r1")
    assert verify_snapshot(fs, directory, None).problems == []
    assert result.counts.files == len(sqlite_demo.rows.learner_ids)
    assert fs.find(f"{destination.root}/.incomplete") == []


def test_encrypted_documents_verify_only_with_the_key(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    key = Fernet.generate_key().decode()
    run_archive(
        sqlite_demo,
        tmp_path,
        run_id="r1",
        encrypt=True,
        compress="zstd",
        secrets={"encryption_key": key},
    )
    names = [p.name for p in (tmp_path / "r1").iterdir() if p.name != "manifest.json"]
    assert names and all(n.endswith(".json.zst.enc") for n in names)
    fs, directory = open_snapshot(str(tmp_path / "r1"))
    assert verify_snapshot(fs, directory, Fernet(key.encode())).problems == []
    without = verify_snapshot(fs, directory, None).problems
    assert len(without) == len(names) and "no encryption key" in without[0]
    wrong = verify_snapshot(fs, directory, Fernet(Fernet.generate_key())).problems
    assert len(wrong) == len(names) and "cannot be decrypted" in wrong[0]


def test_encrypt_without_a_key_is_refused(sqlite_demo: DemoSource, tmp_path: Path) -> None:
    with pytest.raises(OptionUnavailable, match="LEARNER_EXPORT_ENCRYPTION_KEY"):
        run_archive(sqlite_demo, tmp_path, encrypt=True)
    assert list(tmp_path.iterdir()) == []


def test_ids_that_cannot_be_exported_fail_the_run_unless_tolerated(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    with pytest.raises(RunFailed, match=r"ids 1, 999999"):
        run_archive(sqlite_demo, tmp_path, run_id="r1", learners=[1, 3, 999_999])
    assert not (tmp_path / "r1").exists()
    result = run_archive(
        sqlite_demo, tmp_path, run_id="r1", learners=[1, 3, 999_999], tolerate_failures=True
    )
    assert (result.counts.files, result.not_found) == (1, [1, 999_999])
    manifest = orjson.loads((tmp_path / "r1" / "manifest.json").read_bytes())
    assert manifest["not_found"] == [1, 999_999]
    assert manifest["parameters"]["learners"] == [1, 3, 999_999]


def test_retention_deletes_older_snapshots_and_records_it(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    run_archive(sqlite_demo, tmp_path, run_id="first", learners=[3])
    result = run_archive(sqlite_demo, tmp_path, run_id="second", learners=[3], keep=1)
    assert result.deleted_snapshots == ["first"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".deleted", "second"]
    record = orjson.loads((tmp_path / ".deleted" / "first.json").read_bytes())
    assert record["deleted_by_run"] == "second"


def test_each_run_leaves_a_summary_artifact(
    sqlite_demo: DemoSource, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    run_archive(sqlite_demo, tmp_path, run_id="art", learners=[3, 4])
    drain_prefect_queues()
    # Read straight from the server's database: the locked FastAPI rejects the client's
    # artifact filter request (see flows/server.py).
    with contextlib.closing(sqlite3.connect(prefect_server.home / "prefect.db")) as db:
        rows = db.execute("SELECT data FROM artifact WHERE key = ?", (ARTIFACT_KEY,)).fetchall()
    assert any("| files | 2 |" in str(data) for (data,) in rows)


def test_a_run_with_report_writes_it_and_publishes_its_headline_figures(
    sqlite_demo: DemoSource, tmp_path: Path, prefect_server: PrefectServer
) -> None:
    from tests.analyst import KEY, personal_values

    result = run_archive(
        sqlite_demo, tmp_path, run_id="rep", parquet=True, report=True,
        secrets={"pseudonym_key": KEY.decode()},
    )  # fmt: skip
    assert result.report == f"{tmp_path}/rep/report.html"
    assert (tmp_path / "rep" / "report.html").read_bytes().startswith(b"<!doctype html>")
    assert verify_snapshot(*open_snapshot(str(tmp_path / "rep")), None).problems == []
    drain_prefect_queues()
    with contextlib.closing(sqlite3.connect(prefect_server.home / "prefect.db")) as db:
        [(data,)] = db.execute(
            "SELECT data FROM artifact WHERE key = ?", (REPORT_ARTIFACT_KEY,)
        ).fetchall()
    markdown = orjson.loads(data) if data.startswith('"') else data
    assert f"`{tmp_path}/rep/report.html`" in markdown
    assert f"| learners | {len(sqlite_demo.rows.learner_ids)} |" in markdown
    assert "| learners whose documents are truncated | fewer than 5 learners |" in markdown
    pseudonyms = {row["learner_pseudonym"] for row in pq.read_table(
        tmp_path / "rep" / "parquet" / "learners").to_pylist()}  # fmt: skip
    for value in [*personal_values(sqlite_demo.rows), *pseudonyms]:
        assert value not in markdown


def test_export_learner_writes_one_file(demo_source: DemoSource, tmp_path: Path) -> None:
    from flows.options import ArchiveSecrets

    entry = export_learner(
        learner_id=3,
        dest=str(tmp_path),
        exported_by=1,
        secrets=ArchiveSecrets(source_url=demo_source.url),  # type: ignore[arg-type]
    )
    document = orjson.loads((tmp_path / entry.path).read_bytes())
    assert document["learner"]["id"] == 3 and document["exportedBy"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [entry.path]


def test_a_transient_error_is_retried_and_the_run_completes(
    sqlite_demo: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.archive
    from extract.errors import TransientExtractError

    calls: list[int] = []
    real = flows.archive.archive_chunk

    def flaky(job: object, index: int, learner_ids: list[int]) -> object:
        calls.append(index)
        if calls.count(index) == 1 and index == 0:
            raise TransientExtractError("reading the sqlite source failed (SQLITE_BUSY)")
        return real(job, index, learner_ids)  # type: ignore[arg-type]

    monkeypatch.setattr(flows.archive, "archive_chunk", flaky)
    monkeypatch.setattr(
        flows.archive,
        "archive_chunk_task",
        flows.archive.archive_chunk_task.with_options(retry_delay_seconds=0),
    )
    result = run_archive(sqlite_demo, tmp_path, run_id="r1", chunk_size=6)
    assert sorted(calls) == [0, 0, 1]
    assert result.counts.files == len(sqlite_demo.rows.learner_ids)


def test_a_terminal_error_is_not_retried(
    sqlite_demo: DemoSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.archive
    from load.errors import TerminalLoadError

    calls: list[int] = []

    def broken(job: object, index: int, learner_ids: list[int]) -> object:
        calls.append(index)
        raise TerminalLoadError("writing /somewhere failed (No space left on device)")

    monkeypatch.setattr(flows.archive, "archive_chunk", broken)
    with pytest.raises(RunFailed, match="12 learner"):
        run_archive(sqlite_demo, tmp_path, run_id="r1", chunk_size=6)
    assert sorted(calls) == [0, 1]
