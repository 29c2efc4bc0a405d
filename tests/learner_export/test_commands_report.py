"""`learner-export report`: the page written where asked and its path printed, from a local
directory, a compressed archive of a snapshot (an fsspec URL) or a snapshot with compressed and
encrypted documents; an unfinished or tampered snapshot refused in one line, nothing written."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from flows.report import REPORT_NAME
from learner_export.cli import main
from learner_export.commands_report import DEFAULT_MIN_CELL
from tests.analyst import write_snapshot
from tests.conftest import DemoSource
from transform import report_figures


def test_the_page_is_written_and_its_path_printed(
    report_snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out" / "page.html"
    out.parent.mkdir()
    assert main(["report", str(report_snapshot), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    # The same page as `archive --report` wrote into the snapshot (same tables, same bytes).
    assert out.read_bytes() == (report_snapshot / REPORT_NAME).read_bytes()


def test_a_tar_gz_of_a_snapshot_is_read_through_its_url(
    report_snapshot: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    packed = tmp_path / "snapshot.tar.gz"
    with tarfile.open(packed, "w:gz") as tar:
        tar.add(report_snapshot, arcname=report_snapshot.name)
    monkeypatch.chdir(tmp_path)
    url = f"tar://{report_snapshot.name}::{packed}"
    assert main(["report", url, "--min-cell", "13"]) == 0
    written = tmp_path / f"report-{report_snapshot.name}.html"  # the default name
    assert capsys.readouterr().out == f"{written}\n"
    page = written.read_text()
    # 12 learners, cells of at least 13: every figure suppressed, only the run itself shown.
    assert page.count("data-value=") == 2
    assert "fewer than 13 learners" in page


def test_documents_compressed_and_encrypted_need_no_key(
    sqlite_demo: DemoSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    snapshot = write_snapshot(
        sqlite_demo, tmp_path / "snaps", "2026-03-04", compress="zstd", encryption_key=key,
        chunk_size=12,
    )  # fmt: skip
    assert next(snapshot.glob("*.json.zst.enc"))
    assert main(["report", str(snapshot), "--out", str(tmp_path / "r.html")]) == 0
    assert "Hardest topics" in (tmp_path / "r.html").read_text()


def test_an_unfinished_snapshot_is_refused_in_one_line(
    report_snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(report_snapshot, copy)
    (copy / "manifest.json").unlink()
    out = tmp_path / "never.html"
    assert main(["report", str(copy), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"learner-export: error: {copy}: not a finished snapshot (no manifest.json); nothing was "
        "written (`learner-export verify` lists every mismatch of a snapshot)\n"
    )
    assert not out.exists()


def test_a_part_that_does_not_match_the_manifest_is_refused(
    report_snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(report_snapshot, copy)
    (copy / "parquet" / "achievements" / "part-00002.parquet").unlink()
    assert main(["report", str(copy), "--out", str(tmp_path / "never.html")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"learner-export: error: {copy}: parquet/achievements/part-00002.parquet: is missing"
    )
    assert err.count("\n") == 1
    assert not (tmp_path / "never.html").exists()


def test_the_help_default_is_the_figures_default() -> None:
    assert DEFAULT_MIN_CELL == report_figures.DEFAULT_MIN_CELL
