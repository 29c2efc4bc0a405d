"""transform/report_figures.py and report_html.py on small tables made for the purpose: the
suppression rule (distinct learners, not rows), rankings that skip suppressed cells, the page's
self-containment and its determinism."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from transform.analyst_schema import TABLE_SCHEMAS
from transform.report_figures import (
    TABLE_COLUMNS,
    SnapshotFacts,
    build_figures,
    frames,
)
from transform.report_html import report_page

FACTS = SnapshotFacts("2026-05-04", "2026-05-04T02:00:00.000Z", 1, 50)
WHEN = datetime(2026, 4, 29, 10, 0, tzinfo=UTC)  # a Wednesday


def tables(lessons: list[dict[str, Any]]) -> dict[str, pa.Table | None]:
    """The report's tables holding these lessons (and one learners row per learner)."""
    learners = sorted({row["learner_pseudonym"] for row in lessons})

    def table(name: str, rows: list[dict[str, Any]]) -> pa.Table:
        schema = pa.schema([TABLE_SCHEMAS[name].field(c) for c in TABLE_COLUMNS[name]])
        return pa.Table.from_pylist(rows, schema=schema)

    return {
        "learners": table(
            "learners",
            [
                {"learner_pseudonym": p, "run_id": FACTS.run_id, "exported_at": WHEN}
                for p in learners
            ],
        ),
        "lessons": table("lessons", lessons),
        "quiz_questions": table("quiz_questions", []),
        "quiz_answers": None,  # the source had no quiz_answers table
        "concept_mastery": table("concept_mastery", []),
        "achievements": table("achievements", []),
    }


def lesson(learner: int, subject: str, score: int, topic: str = "Fractions") -> dict[str, Any]:
    return {
        "learner_pseudonym": f"p{learner:031d}", "status": "DONE", "subject": subject,
        "score": score, "spec_grade_level": 3, "topic": topic, "created_at": WHEN,
        "completed_at": WHEN,
    }  # fmt: skip


# Math: 5 learners. Art: 4 learners, 40 lessons (many rows, still a small cell).
LESSONS = [lesson(n, "Math", 60 + n) for n in range(5)] + [
    lesson(n % 4, "Art", 90, topic="Color") for n in range(40)
]


def figure(name: str, min_cell: int = 5) -> Any:
    [found] = [f for f in build_figures(frames(FACTS, tables(LESSONS)), min_cell) if f.name == name]
    return found


def test_a_cell_is_suppressed_by_its_distinct_learners_not_its_rows() -> None:
    rows = {row.key: row for row in figure("score_by_subject").rows}
    assert rows[("Art",)].suppressed and set(rows[("Art",)].values) == {None}
    assert not rows[("Math",)].suppressed
    assert rows[("Math",)].values == (5, 5, 62.0, 61.0, 62.0, 63.0)
    weeks = {row.key: row for row in figure("completed_per_week").rows}
    assert weeks[("2026-04-27", "Math")].values == (5, 5)  # the week from Monday, UTC
    assert weeks[("2026-04-27", "Art")].suppressed


def test_rankings_leave_suppressed_cells_out_altogether() -> None:
    # Art/Color has the higher mean, Math/Fractions the lower: only Math is ranked at 5...
    assert [row.key for row in figure("hardest_topics").rows] == [("Math", "Fractions")]
    # ...and both at 4, Math first (lowest mean).
    ranked = figure("hardest_topics", min_cell=4).rows
    assert [row.key for row in ranked] == [("Math", "Fractions"), ("Art", "Color")]


def test_a_missing_optional_table_is_said_not_drawn() -> None:
    missed = figure("missed_questions")
    assert missed.rows == () and "no quiz_answers table" in (missed.absent or "")


def test_truncation_facts_are_suppressed_below_the_threshold() -> None:
    rows = {row.key[0]: row for row in figure("snapshot").rows}
    assert rows["learners whose documents are truncated"].values == (None,)
    assert rows["lessons left out of those documents"].values == (None,)
    assert rows["learners"].values == (5,)


def test_the_page_is_self_contained_and_the_same_bytes_every_time() -> None:
    data = frames(FACTS, tables(LESSONS))
    page, headline = report_page(data)
    assert page == report_page(frames(FACTS, tables(LESSONS)))[0]
    text = page.decode()
    outside_images = re.sub(r"data:image/svg\+xml;base64,[A-Za-z0-9+/=]+", "", text)
    for fetching in ("<script", "<link", "@import", "url(", "http:", "https:", "src='/"):
        assert fetching not in outside_images
    assert text.count("data:image/svg+xml;base64,") == 4  # subject, grade, weeks, topics
    assert ("learners", "5") in headline
    assert "fewer than 5 learners" in text
    assert "p0000" not in text  # no pseudonym
