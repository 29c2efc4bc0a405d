"""`export --format html|both`, `export --parent ID` and `coverage`, called as the command line
calls them (in process: `learner_export.cli.main`)."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

import orjson
import pytest

from learner_export.cli import main as cli_main
from learner_export.settings import get_settings
from load.audit import read_audit
from tests.conftest import DemoSource

_TAIL = re.compile(rb',"exportDate":"[^"]*","exportedBy":(?:null|[0-9]+)\}\Z')


def _without_export_date(body: bytes) -> bytes:
    stripped, count = _TAIL.subn(b"}", body)
    assert count == 1
    return stripped


def _export(source: DemoSource, out: Path, *args: str) -> int:
    return cli_main(["export", *args, "--out", str(out), "--database-url", source.url])


def test_both_formats_come_from_one_document(
    demo_source: DemoSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(demo_source, tmp_path / "json", "3") == 0
    assert _export(demo_source, tmp_path / "both", "3", "--format", "both") == 0
    assert _export(demo_source, tmp_path / "html", "3", "--format", "html") == 0
    (single,) = (tmp_path / "json").iterdir()
    both = sorted((tmp_path / "both").iterdir())
    assert [p.suffix for p in both] == [".html", ".json"]
    assert both[1].name == single.name
    assert _without_export_date(both[1].read_bytes()) == _without_export_date(single.read_bytes())
    (page,) = (tmp_path / "html").iterdir()
    assert page.name == single.name.removesuffix(".json") + ".html"
    document = orjson.loads(single.read_bytes())
    html = page.read_text(encoding="utf-8")
    assert html.count('<article class="lesson">') == len(document["lessons"])
    assert "<script" not in html
    records = read_audit(get_settings().audit_log_path)
    assert [(r["via"], r["learnerId"], r["status"]) for r in records] == [("cli", 3, 200)] * 3
    assert records[1]["sha256"] == hashlib.sha256(both[1].read_bytes()).hexdigest()


def test_the_family_zip_holds_each_childs_single_export(
    demo_source: DemoSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    children = sorted(u["id"] for u in demo_source.rows.users if u["parent_id"] == 1)
    assert _export(demo_source, tmp_path, "--parent", "1") == 0
    (bundle_path,) = tmp_path.iterdir()
    assert re.fullmatch(r"family-data-1-\d{4}-\d{2}-\d{2}\.zip", bundle_path.name)
    bundle = zipfile.ZipFile(io.BytesIO(bundle_path.read_bytes()))
    manifest = orjson.loads(bundle.read("manifest.json"))
    assert manifest["children"] == children
    names = [m["name"] for m in manifest["members"]]
    assert names == [*[n for c in children for n in (
        f"learner-data-{c}-{manifest['exportDate'][:10]}.json",
        f"learner-data-{c}-{manifest['exportDate'][:10]}.html",
    )], "notice.json"]  # fmt: skip
    assert bundle.namelist() == [*names, "manifest.json"]
    for member in manifest["members"]:
        assert hashlib.sha256(bundle.read(member["name"])).hexdigest() == member["sha256"]
    for child in children:
        single_dir = tmp_path / f"single-{child}"
        assert _export(demo_source, single_dir, str(child)) == 0
        (single,) = single_dir.iterdir()
        assert _without_export_date(bundle.read(single.name)) == _without_export_date(
            single.read_bytes()
        )
    records = read_audit(get_settings().audit_log_path)[: len(children)]
    assert [(r["via"], r["learnerId"]) for r in records] == [("cli", c) for c in children]
    notice = orjson.loads(bundle.read("notice.json"))
    assert any(left["where"] == "points" for left in notice["leftOut"])  # from the registry


def test_family_and_format_errors_are_one_line(
    sqlite_demo: DemoSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _export(sqlite_demo, tmp_path, "3", "--parent", "1") == 1
    assert "either a LEARNER_ID or --parent" in capsys.readouterr().err
    assert _export(sqlite_demo, tmp_path) == 1
    capsys.readouterr()
    assert _export(sqlite_demo, tmp_path, "--parent", "3") == 1
    assert capsys.readouterr().err == (
        "learner-export: error: user 3 has no children on record: nothing to export\n"
    )
    assert list(tmp_path.iterdir()) == []
    assert read_audit(get_settings().audit_log_path) == []
