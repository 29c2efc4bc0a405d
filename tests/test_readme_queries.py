"""The README's analyst queries, run as written on a demo snapshot: every DuckDB and pandas block
of its "Parquet tables for analysts" section, each result checked against the demo rows."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pandas as pd
import pytest

from flows.chunk import ChunkJob, archive_chunk
from flows.run import open_plan, publish_run, write_manifest
from learner_export.demo import DemoRows
from load.destination import open_destination
from load.manifest import RunParameters
from tests.conftest import DemoSource

README = Path(__file__).resolve().parent.parent / "README.md"
RUNS = ("2026-11-27", "2026-11-28")  # the README's snapshot, and one more for "all runs"


def section_blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Parquet tables for analysts") : text.index("## Serving")]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture(scope="module")
def snapshots(sqlite_demo: DemoSource, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`snapshots/<run>/` of the SQLite demo, written by the chunk and run functions the flow
    composes (no Prefect needed for the files)."""
    root = tmp_path_factory.mktemp("readme")
    destination = open_destination(str(root / "snapshots"))
    parameters = RunParameters(
        learners="all", chunk_size=5, compress=None, encrypt=False, exported_by=None, parquet=True
    )
    ids = sqlite_demo.rows.learner_ids
    for run_id in RUNS:
        now = datetime.fromisoformat(f"{run_id}T02:00:00+00:00")
        plan = open_plan(destination, run_id, parameters, now=now, learner_ids=lambda: ids)
        job = ChunkJob(
            destination_url=str(root / "snapshots"), run_id=run_id, source_url=sqlite_demo.url,
            export_date=now, exported_by=None, compress=None, encryption_key=None, parquet=True,
            pseudonym_key="readme-test pseudonym key",
        )  # fmt: skip
        parts = {i: archive_chunk(job, i, chunk).tally() for i, chunk in enumerate(plan.chunks)}
        manifest = write_manifest(
            destination, plan, parts, chunk_errors={}, tolerate_failures=False, now=now,
            seconds=1.0,
        )  # fmt: skip
        publish_run(destination, manifest)
    return root


def test_the_section_has_the_blocks_this_test_checks() -> None:
    assert len(section_blocks("sql")) == 4
    assert len(section_blocks("python")) == 6


def test_every_duckdb_query_answers_its_question(
    snapshots: Path, sqlite_demo: DemoSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(snapshots)
    by_grade, per_week, missed, concepts = (
        duckdb.sql(query).fetchall() for query in section_blocks("sql")
    )
    rows = sqlite_demo.rows
    expected = expected_scores(rows)
    assert [(subject, grade, n) for subject, grade, _, n in by_grade] == [
        (subject, grade, n) for (subject, grade), (_, n) in expected.items()
    ]
    for (_, _, mean, _), (exact, _) in zip(by_grade, expected.values(), strict=True):
        assert abs(mean - exact) <= 0.05 + 1e-9  # rounded to one decimal
    assert [(week.astimezone(UTC), n) for week, n in per_week] == expected_weeks(rows)
    assert [row[:3] for row in missed] == expected_missed(rows)
    assert all(question.startswith("Question ") for *_, question in missed)
    assert [row[:3] for row in concepts] == expected_concepts(rows)


def test_every_pandas_block_answers_its_question(
    snapshots: Path, sqlite_demo: DemoSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(snapshots)
    names: dict[str, Any] = {}
    for block in section_blocks("python"):
        exec(block, names)  # noqa: S102 - the README's own code, run as a reader would
    rows = sqlite_demo.rows
    assert names["every"]["run_id"].value_counts().to_dict() == {
        run: len(rows.learner_ids) for run in RUNS
    }
    scores = names["by_subject_grade"]
    got = {
        (r.subject, None if pd.isna(r.spec_grade_level) else int(r.spec_grade_level)): (
            round(float(r.mean_score), 6),
            int(r.lessons),
        )
        for r in scores.itertuples()
    }
    assert got == {k: (round(m, 6), n) for k, (m, n) in expected_scores(rows).items()}
    per_week = names["per_week"]
    assert [(w.tz_localize(UTC).to_pydatetime(), int(n)) for w, n in per_week.items()] == (
        expected_weeks(rows)
    )
    most_missed = names["most_missed"]
    assert [
        (r.question_hash, int(r.answers), int(r.missed)) for r in most_missed.itertuples()
    ] == expected_missed(rows)
    concepts = names["concepts"]
    assert [
        (r.subject, r.concept_name, int(r.missed)) for r in concepts.itertuples()
    ] == expected_concepts(rows)


# --- what the demo rows say, computed without the tables --------------------------------------


def expected_scores(rows: DemoRows) -> dict[tuple[str, int | None], tuple[float, int]]:
    scores: defaultdict[tuple[str, int | None], list[int]] = defaultdict(list)
    for lesson in rows.lessons:
        if lesson["score"] is None:
            continue
        spec = _spec(lesson["spec"])
        grade = spec.get("gradeLevel") if isinstance(spec, dict) else None
        scores[lesson["subject"], grade].append(lesson["score"])
    ordered = sorted(scores, key=lambda k: (k[0], k[1] is None, k[1] or 0))
    return {k: (sum(scores[k]) / len(scores[k]), len(scores[k])) for k in ordered}


def expected_weeks(rows: DemoRows) -> list[tuple[datetime, int]]:
    weeks: Counter[datetime] = Counter()
    for lesson in rows.lessons:
        if lesson["status"] == "DONE" and lesson["completed_at"] is not None:
            day = lesson["completed_at"].replace(hour=0, minute=0, second=0, microsecond=0)
            weeks[(day - timedelta(days=day.weekday())).replace(tzinfo=UTC)] += 1
    return sorted(weeks.items())


def expected_missed(rows: DemoRows) -> list[tuple[str, int, int]]:
    answers: Counter[str] = Counter()
    missed: Counter[str] = Counter()
    for answer in rows.quiz_answers:
        answers[answer["question_hash"]] += 1
        missed[answer["question_hash"]] += not answer["is_correct"]
    ordered = sorted(answers, key=lambda h: (-missed[h], -answers[h], h))
    return [(h, answers[h], missed[h]) for h in ordered[:10]]


def expected_concepts(rows: DemoRows) -> list[tuple[str, str, int]]:
    missed: Counter[tuple[str, str]] = Counter()
    for row in rows.concept_mastery:
        missed[row["subject"], row["concept_name"]] += row["total_count"] - row["correct_count"]
    ordered = sorted(missed, key=lambda k: (-missed[k], k))
    return [(*k, missed[k]) for k in ordered[:10]]


def _spec(text: str | None) -> Any:
    try:
        return orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return None
