"""The analyst report of a real snapshot (flows/report.py): every number it prints equals an
independent DuckDB query over the snapshot's Parquet files, small cells are suppressed in tables
and plots, nothing names a learner, `archive --report` writes it into the snapshot and `verify`
checks it, and the page renders offline in a real browser."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from flows.report import REPORT_NAME, snapshot_report
from learner_export.verify import verify_snapshot
from load.destination import open_snapshot
from load.snapshot_files import SnapshotError
from tests.analyst import personal_values, write_snapshot
from tests.browser import distinct_colours, render
from tests.conftest import DemoSource, make_sqlite_demo

SUPPRESSED = "suppressed"
TOP = 10


@pytest.fixture
def snapshot(report_snapshot: Path) -> Path:
    return report_snapshot


@pytest.fixture(scope="module")
def small_groups(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoSource, Path]:
    """A snapshot designed to have small groups: 6 learners, so most subjects, grades, weeks and
    topics hold fewer than 5 of them, and a few hold 5 or 6."""
    root = tmp_path_factory.mktemp("small")
    source = make_sqlite_demo(root / "small.sqlite3", learners=6)
    return source, write_snapshot(source, root / "snapshots", "2026-03-03", chunk_size=2)


def report_of(directory: Path, min_cell: int = 5, before: Path | None = None) -> str:
    fs, path = open_snapshot(str(directory))
    other = None if before is None else (*open_snapshot(str(before)), "before")
    page, _ = snapshot_report(fs, path, name="snap", min_cell=min_cell, before=other)
    return page.decode()


# --- every printed number against DuckDB --------------------------------------------------------


class _Cells(HTMLParser):
    """Every `data-figure` element of the page: (figure, key, measure) -> (value, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, tuple[str, ...], str], tuple[str, str]] = {}
        self._open: tuple[tuple[str, tuple[str, ...], str], str] | None = None
        self.images: list[bytes] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img" and (src := found.get("src") or "").startswith(
            "data:image/svg+xml;base64,"
        ):
            self.images.append(base64.b64decode(src.split(",", 1)[1]))
        if "data-figure" not in found:
            return
        key = tuple(json.loads(found.get("data-key") or "[]"))
        where = (str(found["data-figure"]), key, str(found["data-measure"]))
        value = SUPPRESSED if "data-suppressed" in found else str(found["data-value"])
        self._open = (where, value)
        self.cells[where] = (value, "")

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            where, value = self._open
            self.cells[where] = (value, self.cells[where][1] + data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "span"):
            self._open = None


def parsed(page: str) -> _Cells:
    cells = _Cells()
    cells.feed(page)
    return cells


def _rows(sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def duckdb_cells(snapshot: Path, min_cell: int) -> dict[tuple[str, tuple[str, ...], str], Any]:
    """What the report must print, computed with DuckDB SQL over the Parquet files alone (and
    nothing of the code under test): suppressed cells as SUPPRESSED."""
    t = {name: f"read_parquet('{snapshot}/parquet/{name}/*.parquet')" for name in (
        "learners", "lessons", "quiz_questions", "quiz_answers", "concept_mastery", "achievements",
    )}  # fmt: skip
    expected: dict[tuple[str, tuple[str, ...], str], Any] = {}

    def put(figure: str, key: tuple[str, ...], learners: int, values: dict[str, Any]) -> None:
        for measure, value in values.items():
            expected[(figure, key, measure)] = value if learners >= min_cell else SUPPRESSED

    [(run_id, exported_at)] = _rows(f"SELECT DISTINCT run_id, exported_at FROM {t['learners']}")
    expected[("snapshot", (), "run_id")] = run_id
    expected[("snapshot", (), "exported_at")] = exported_at
    for label, sql in {
        "learners": f"SELECT count(*), count(DISTINCT learner_pseudonym) FROM {t['learners']}",
        "lessons": f"SELECT count(*), count(DISTINCT learner_pseudonym) FROM {t['lessons']}",
        "lessons completed": f"SELECT count(*), count(DISTINCT learner_pseudonym) FROM {t['lessons']} WHERE status = 'DONE'",
        "mean score": f"SELECT avg(score), count(DISTINCT learner_pseudonym) FROM {t['lessons']} WHERE score IS NOT NULL",
        "quiz questions": f"SELECT count(*), count(DISTINCT learner_pseudonym) FROM {t['quiz_questions']}",
        "achievements": f"SELECT count(*), count(DISTINCT learner_pseudonym) FROM {t['achievements']}",
        "answers": f"SELECT count(*), count(DISTINCT learner_pseudonym) FROM {t['quiz_answers']}",
        "first lesson created (day, UTC)": f"SELECT strftime(min(created_at), '%Y-%m-%d'), count(DISTINCT learner_pseudonym) FROM {t['lessons']} WHERE created_at IS NOT NULL",
        "last lesson created (day, UTC)": f"SELECT strftime(max(created_at), '%Y-%m-%d'), count(DISTINCT learner_pseudonym) FROM {t['lessons']} WHERE created_at IS NOT NULL",
        # What the documents left out, from the tables (every lesson) and the 1,000 cap.
        "learners whose documents are truncated": f"SELECT count(*), count(*) FROM {t['learners']} WHERE lessons_total > 1000",
        "lessons left out of those documents": f"SELECT coalesce(sum(lessons_total - 1000), 0), count(*) FROM {t['learners']} WHERE lessons_total > 1000",
    }.items():  # fmt: skip
        [(value, learners)] = _rows(sql)
        put("snapshot", (label,), learners, {"value": value})

    score = "SELECT {key} AS k, count(DISTINCT learner_pseudonym), count(*), avg(score), " \
        "quantile_cont(score, 0.25), quantile_cont(score, 0.5), quantile_cont(score, 0.75) " \
        f"FROM {t['lessons']} WHERE score IS NOT NULL GROUP BY k"  # fmt: skip
    for figure, key in (("score_by_subject", "coalesce(subject, '(none)')"),
                        ("score_by_grade", "coalesce(CAST(spec_grade_level AS VARCHAR), '(none)')")):  # fmt: skip
        for k, learners, lessons, mean, p25, median, p75 in _rows(score.format(key=key)):
            put(figure, (k,), learners, {"learners": learners, "lessons": lessons, "mean": mean,
                "p25": p25, "median": median, "p75": p75})  # fmt: skip

    for figure, table, column, second, where, counted in (
        ("completed_per_week", "lessons", "completed_at", "subject",
         "status = 'DONE' AND completed_at IS NOT NULL", "lessons"),
        ("achievements_per_week", "achievements", "earned_at", "type", "earned_at IS NOT NULL",
         "achievements"),
    ):  # fmt: skip
        for week, other, learners, rows in _rows(
            f"SELECT strftime(date_trunc('week', {column}), '%Y-%m-%d') AS w, "
            f"coalesce({second}, '(none)') AS s, count(DISTINCT learner_pseudonym), count(*) "
            f"FROM {t[table]} WHERE {where} GROUP BY w, s"
        ):
            put(figure, (week, other), learners, {"learners": learners, counted: rows})

    # Ranked figures show the first TOP cells of at least min_cell learners, nothing else.
    for subject, topic, learners, lessons, mean in _rows(
        "SELECT coalesce(subject, '(none)') AS s, coalesce(topic, '(none)') AS t, "
        "count(DISTINCT learner_pseudonym) AS n, count(*) AS c, avg(score) AS m "
        f"FROM {t['lessons']} WHERE score IS NOT NULL GROUP BY s, t HAVING n >= {min_cell} "
        f"ORDER BY m, c DESC, s, t LIMIT {TOP}"
    ):
        put("hardest_topics", (subject, topic), learners,
            {"learners": learners, "lessons": lessons, "mean": mean})  # fmt: skip
    for subject, text, learners, answers, missed in _rows(
        "WITH h AS (SELECT question_hash, count(DISTINCT learner_pseudonym) AS n, count(*) AS c, "
        "count(*) FILTER (WHERE NOT is_correct) AS missed, min(question_id) AS qid "
        f"FROM {t['quiz_answers']} GROUP BY question_hash HAVING n >= {min_cell}), "
        f"q AS (SELECT question_id, any_value(subject) AS subject, any_value(question) AS question FROM {t['quiz_questions']} GROUP BY question_id) "
        "SELECT coalesce(q.subject, '(none)') AS s, q.question, h.n, h.c, h.missed FROM h "
        "JOIN q ON q.question_id = h.qid "
        f"ORDER BY h.missed / h.c DESC, h.c DESC, h.question_hash LIMIT {TOP}"
    ):  # fmt: skip
        short = text if len(text) <= 90 else text[:89] + "…"
        put("missed_questions", (subject, short), learners, {"learners": learners,
            "answers": answers, "missed": missed, "missed_share": 100 * missed / answers})  # fmt: skip
    for subject, concept, learners, mean, share in _rows(
        "SELECT coalesce(subject, '(none)') AS s, coalesce(concept_name, '(none)') AS c, "
        "count(DISTINCT learner_pseudonym) AS n, avg(mastery_level) AS m, "
        "100 * avg(CAST(needs_reinforcement AS INTEGER)) "
        f"FROM {t['concept_mastery']} GROUP BY s, c HAVING n >= {min_cell} "
        f"ORDER BY m, n DESC, s, c LIMIT {TOP}"
    ):
        put("weakest_concepts", (subject, concept), learners,
            {"learners": learners, "mean": mean, "reinforce_share": share})  # fmt: skip
    return expected


def assert_same(printed: dict[Any, tuple[str, str]], expected: dict[Any, Any]) -> None:
    assert set(printed) == set(expected)
    for where, want in expected.items():
        value, text = printed[where]
        if want == SUPPRESSED or value == SUPPRESSED:
            assert (value, text) == (want, f"fewer than {MIN_CELL[0]} learners"), where
        elif isinstance(want, str):
            assert value == want == text, where
        elif isinstance(want, int) and not isinstance(want, bool):
            assert int(value) == want, where
            assert int(text.lstrip("+").replace(",", "")) == want, where
        elif hasattr(want, "isoformat"):  # the export time
            assert value == want.isoformat(timespec="milliseconds").replace("+00:00", "Z"), where
        else:
            assert float(value) == pytest.approx(float(want), rel=1e-9, abs=1e-9), where
            assert abs(float(text.split()[0]) - float(want)) <= 0.05 + 1e-9, where


MIN_CELL = [5]


def test_every_number_printed_equals_a_duckdb_query_over_the_parquet_files(
    snapshot: Path,
) -> None:
    MIN_CELL[0] = 5
    printed = parsed(report_of(snapshot)).cells
    expected = duckdb_cells(snapshot, 5)
    assert_same(printed, expected)
    shown = [w for w, v in expected.items() if v != SUPPRESSED]
    assert len(shown) > 100  # not a page of empty sections
    # The demo's weeks hold small groups; its subjects do not.
    assert SUPPRESSED in {v for (f, _, _), v in expected.items() if f == "completed_per_week"}


# --- privacy ------------------------------------------------------------------------------------


def test_small_cells_are_suppressed_in_tables_and_plots(
    small_groups: tuple[DemoSource, Path],
) -> None:
    _, directory = small_groups
    MIN_CELL[0] = 5
    page = report_of(directory)
    found = parsed(page)
    expected = duckdb_cells(directory, 5)
    assert_same(found.cells, expected)
    by_figure: dict[str, set[bool]] = {}
    for (figure, _, _), value in expected.items():
        by_figure.setdefault(figure, set()).add(value == SUPPRESSED)
    # The snapshot was designed so: both kinds of cell in the headline figures and by grade,
    # and weeks too sparse for any cell to show.
    for figure in ("snapshot", "score_by_grade"):
        assert by_figure[figure] == {True, False}, figure
    assert by_figure["completed_per_week"] == by_figure["achievements_per_week"] == {True}
    # In plots, a suppressed cell is a grey mark with no length: the box plot of grades draws
    # one box per shown grade, and one "fewer than" mark per suppressed grade.
    grades = {k for (f, k, _), v in expected.items() if f == "score_by_grade"}
    hidden = {k for (f, k, m), v in expected.items()
              if f == "score_by_grade" and m == "mean" and v == SUPPRESSED}  # fmt: skip
    [svg] = [image for image in found.images if image.count(b'id="shown') == len(grades) - len(hidden)
             and image.count(b'id="suppressed') == len(hidden)]  # fmt: skip
    assert hidden and svg


def test_no_learner_is_named_anywhere_in_the_page(small_groups: tuple[DemoSource, Path]) -> None:
    source, directory = small_groups
    page = report_of(directory, min_cell=1)  # every cell shown: the most there is to leak
    found = parsed(page)
    MIN_CELL[0] = 1  # and every number, the most-missed questions' too, is DuckDB's
    expected = duckdb_cells(directory, 1)
    assert_same(found.cells, expected)
    assert any(figure == "missed_questions" for figure, _, _ in expected)
    text = page + "".join(image.decode() for image in found.images)
    pseudonyms = [r[0] for r in _rows(
        f"SELECT DISTINCT learner_pseudonym FROM read_parquet('{directory}/parquet/*/*.parquet', union_by_name=true) WHERE learner_pseudonym IS NOT NULL"
    )]  # fmt: skip
    rows = source.rows
    ids = [str(r["id"]) for r in rows.lessons + rows.achievements + rows.quiz_answers
           + rows.learner_profiles + rows.concept_mastery]  # fmt: skip
    assert len(pseudonyms) == 6
    for value in [*pseudonyms, *personal_values(rows), *ids]:
        assert value not in text
    assert not re.search(r"[0-9a-f]{32}", text)  # no pseudonym-like or hash-like value at all
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-", text)  # no uuid


# --- the snapshot it reads ----------------------------------------------------------------------


def test_archive_report_is_in_the_snapshot_listed_and_verified(snapshot: Path) -> None:
    manifest = orjson.loads((snapshot / "manifest.json").read_bytes())
    assert manifest["report"]["path"] == REPORT_NAME
    assert manifest["parameters"]["report"] is True
    stored = (snapshot / REPORT_NAME).read_bytes()
    assert stored == report_of(snapshot).encode()  # the same tables, the same bytes
    fs, path = open_snapshot(str(snapshot))
    assert verify_snapshot(fs, path, None).problems == []


def test_verify_reports_a_changed_report(snapshot: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(snapshot, copy)
    page = copy / REPORT_NAME
    page.write_bytes(page.read_bytes().replace(b"fewer than 5", b"exactly 3 of", 1))
    fs, path = open_snapshot(str(copy))
    assert verify_snapshot(fs, path, None).problems == [
        f"{REPORT_NAME}: sha256 differs from the manifest: the file is damaged or not the one listed"
    ]


def test_a_part_that_differs_from_the_manifest_is_refused(snapshot: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(snapshot, copy)
    part = copy / "parquet" / "lessons" / "part-00001.parquet"
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    fs, path = open_snapshot(str(copy))
    with pytest.raises(SnapshotError, match=r"^snap: parquet/lessons/part-00001.parquet: sha256"):
        snapshot_report(fs, path, name="snap")
    (copy / "manifest.json").unlink()  # an unfinished run
    with pytest.raises(SnapshotError, match=r"^snap: not a finished snapshot"):
        snapshot_report(fs, path, name="snap")


def test_an_entry_of_the_manifest_that_cannot_be_trusted_is_refused(
    snapshot: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(snapshot, copy)
    manifest = copy / "manifest.json"
    lines = manifest.read_bytes().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if line.lstrip().startswith(b'{"path"'))
    lines[last] = lines[last].replace(b'"sha256":"', b'"sha256":"X', 1)
    manifest.write_bytes(b"".join(lines))
    fs, path = open_snapshot(str(copy))
    with pytest.raises(
        SnapshotError, match=r"^snap: manifest.json is not a valid manifest \(files"
    ):
        snapshot_report(fs, path, name="snap")


def test_compare_puts_the_headline_figures_side_by_side(
    snapshot: Path, small_groups: tuple[DemoSource, Path]
) -> None:
    _, before = small_groups
    cells = parsed(report_of(snapshot, before=before)).cells
    now = duckdb_cells(snapshot, 1)
    then = duckdb_cells(before, 1)
    for label in ("learners", "lessons", "mean score", "answers"):
        a, b = then[("snapshot", (label,), "value")], now[("snapshot", (label,), "value")]
        assert float(cells[("compare", (label,), "before")][0]) == pytest.approx(float(a))
        assert float(cells[("compare", (label,), "after")][0]) == pytest.approx(float(b))
        assert float(cells[("compare", (label,), "change")][0]) == pytest.approx(float(b - a))
    assert cells[("compare", ("learners",), "change")][1] == "+6"


# --- the page in a browser ----------------------------------------------------------------------


def test_the_page_renders_offline_and_is_not_blank(snapshot: Path) -> None:
    seen = render(snapshot / REPORT_NAME, width=1100, height=1600)
    assert seen.requests == ()
    assert distinct_colours(seen.png) > 16
    assert "<script" not in seen.dom.lower()
    assert "fewer than 5 learners" in seen.dom
