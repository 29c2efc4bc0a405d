"""`archive --html`: each learner's page beside its document, stored as the document is (here
gzip-compressed and encrypted), listed in the manifest, and checked by `verify`."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cryptography.fernet import Fernet

from flows.chunk import ChunkJob, archive_chunk
from flows.run import open_plan, publish_run, write_manifest, written_entries
from learner_export.verify import verify_snapshot
from load.destination import open_destination, open_snapshot
from load.manifest import RunParameters
from tests.conftest import DemoSource
from transform.notice import OperatorNotice

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def test_pages_are_stored_listed_and_verified(sqlite_demo: DemoSource, tmp_path: Path) -> None:
    key = Fernet.generate_key()
    fernet = Fernet(key)
    root = str(tmp_path / "snapshots")
    destination = open_destination(root)
    parameters = RunParameters(
        learners=[3, 4], chunk_size=5, compress="gzip", encrypt=True, exported_by=None,
        parquet=False, html=True,
    )  # fmt: skip
    plan = open_plan(destination, "day", parameters, now=NOW, learner_ids=lambda: [3, 4])
    job = ChunkJob(
        destination_url=root, run_id="day", source_url=sqlite_demo.url, export_date=NOW,
        exported_by=None, compress="gzip", encryption_key=key.decode(), parquet=False,
        pseudonym_key=None, html=True, notice=OperatorNotice(controller="Example Ltd", archive_keep=3),
    )  # fmt: skip
    parts = {i: archive_chunk(job, i, chunk).tally() for i, chunk in enumerate(plan.chunks)}
    manifest = write_manifest(
        destination, plan, parts, chunk_errors={}, tolerate_failures=False, now=NOW, seconds=1.0
    )
    snapshot = Path(publish_run(destination, manifest))
    assert manifest.parameters.html is True
    entries = list(written_entries(destination, "day", published=True))
    for entry in entries:
        assert entry.page is not None
        assert entry.page.path == f"learner-data-{entry.learner_id}-2026-11-27.html.gz.enc"
        document = orjson.loads(
            gzip.decompress(fernet.decrypt((snapshot / entry.path).read_bytes()))
        )
        page = gzip.decompress(fernet.decrypt((snapshot / entry.page.path).read_bytes())).decode()
        assert page.count('<article class="lesson">') == len(document["lessons"])
        assert "Example Ltd" in page and "keeps the 3 newest snapshots" in page
    fs, directory = open_snapshot(str(snapshot))
    report = verify_snapshot(fs, directory, fernet)
    assert (report.documents, report.pages, report.problems) == (2, 2, [])
    # A page changed, or gone, is a mismatch naming it.
    first, second = (entry.page for entry in entries if entry.page is not None)
    (snapshot / first.path).write_bytes(b"tampered")
    (snapshot / second.path).unlink()
    problems = verify_snapshot(fs, directory, fernet).problems
    assert [p.split(":")[0] for p in problems] == [first.path, second.path]


def test_the_flag_reaches_the_run_and_its_jobs(tmp_path: Path) -> None:
    from flows.archive import _page_options
    from flows.options import run_parameters
    from learner_export.cli import build_parser
    from learner_export.commands_archive import _options
    from learner_export.settings import get_settings

    args = build_parser().parse_args(["archive", "--html", "--keep", "4", "--dest", str(tmp_path)])
    options = _options(args, get_settings())
    assert options.html and run_parameters(options).html  # a resumed run must repeat it
    fields = _page_options(options)
    assert fields["html"] is True
    assert fields["notice"].archive_keep == 4  # the run's own --keep tells the retention
    assert any(left.where == "users.password" for left in fields["left_out"])
    plain = build_parser().parse_args(["archive", "--dest", str(tmp_path)])
    assert _page_options(_options(plain, get_settings())) == {}
