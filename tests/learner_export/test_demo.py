"""learner_export.demo: deterministic, realistic, and awkward where the contract says data is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from learner_export.demo import (
    BIG_LEARNER_LESSONS,
    MALFORMED_SPEC,
    DemoDatabaseExists,
    build_demo_database,
    demo_rows,
)
from tests.conftest import DemoSource


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    assert demo_rows(6, 3) == demo_rows(6, 3)
    assert demo_rows(6, 3).lessons != demo_rows(6, 4).lessons


def test_the_awkward_cases_are_present() -> None:
    rows = demo_rows()
    learners = rows.learner_ids
    lessons_of = {i: [r for r in rows.lessons if r["learner_id"] == i] for i in learners}
    profiles = {p["user_id"]: p for p in rows.learner_profiles}
    assert learners[0] == 3 and rows.users[0]["role"] == "PARENT"
    assert len(lessons_of[learners[1]]) == BIG_LEARNER_LESSONS > 1000
    assert learners[2] not in profiles  # a learner without a profile
    assert profiles[learners[3]]["graph"] is None  # NULL JSON columns
    assert any(r["score"] is None and r["status"] == "DONE" for r in rows.lessons)
    assert any(r["spec"] is None for r in rows.lessons)
    assert any(r["image_paths"] is None for r in rows.lessons)
    assert any(not u["name"].isascii() for u in rows.users)
    assert any(a["payload"] and not a["payload"].isascii() for a in rows.achievements)  # emoji
    assert rows.malformed == [("lessons", "spec", rows.malformed[0][2])]
    for learner_id in learners:
        assert sum(r["status"] == "ACTIVE" for r in lessons_of[learner_id]) <= 1


def test_specs_look_like_generated_lessons() -> None:
    specs = [orjson.loads(r["spec"]) for r in demo_rows().lessons
             if r["spec"] and r["spec"] != MALFORMED_SPEC]  # fmt: skip
    new_shape = [s for s in specs if "sections" in s]
    assert new_shape and all(5 <= len(s["questions"]) <= 10 for s in new_shape)
    assert all(
        {"options", "correctIndex", "explanation"} <= set(q)
        for s in new_shape
        for q in s["questions"]
    )
    sizes = sorted(len(orjson.dumps(s)) for s in new_shape)
    assert 3_000 <= sizes[len(sizes) // 2] <= 8_000  # a typical spec is 3-8 KB


def test_an_existing_database_is_not_overwritten_without_replace(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    build_demo_database(url, learners=2, seed=1, replace=False)
    with pytest.raises(DemoDatabaseExists, match="--replace"):
        build_demo_database(url, learners=2, seed=1, replace=False)
    build_demo_database(url, learners=3, seed=1, replace=True)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT count(*) FROM users WHERE role='LEARNER'")).scalar() == 3
        )
    engine.dispose()


def test_both_databases_hold_the_same_rows(demo_source: DemoSource) -> None:
    engine = sa.create_engine(demo_source.owner_url)
    with engine.connect() as conn:
        specs = dict(conn.execute(sa.text("SELECT id, CAST(spec AS TEXT) FROM lessons")).all())
        users = conn.execute(sa.text("SELECT id, name, parent_id FROM users ORDER BY id")).all()
    engine.dispose()
    expected = {r["id"]: r["spec"] for r in demo_source.rows.lessons}
    if demo_source.kind == "postgresql":  # json cannot hold the malformed text: NULL there
        expected[demo_source.rows.malformed[0][2]] = None
    assert specs == expected
    assert [tuple(u) for u in users] == [
        (u["id"], u["name"], u["parent_id"]) for u in demo_source.rows.users
    ]


def test_quiz_answers_agree_with_the_lessons_questions_and_scores() -> None:
    rows = demo_rows()
    lessons = {lesson["id"]: lesson for lesson in rows.lessons}
    answered: dict[str, list[dict[str, object]]] = {}
    for answer in rows.quiz_answers:
        answered.setdefault(str(answer["lesson_id"]), []).append(answer)
    assert answered, "the demo has answers"
    for lesson_id, answers in answered.items():
        lesson = lessons[lesson_id]
        assert lesson["status"] == "DONE"
        assert {a["learner_id"] for a in answers} == {lesson["learner_id"]}
        questions = orjson.loads(lesson["spec"])["questions"]
        assert [a["question_index"] for a in answers] == list(range(len(questions)))
        for answer, question in zip(answers, questions, strict=True):
            assert answer["question_text"] == question["question"]
            assert answer["correct_answer"] == question["correctIndex"]
            assert answer["is_correct"] == (answer["user_answer"] == answer["correct_answer"])
            assert lesson["completed_at"] >= answer["answered_at"]
        if lesson["score"] is not None:
            right = sum(bool(a["is_correct"]) for a in answers)
            assert right == round(len(questions) * lesson["score"] / 100)
    # Every finished lesson with a readable quiz was answered, and no other.
    quizzed = {
        lesson["id"]
        for lesson in rows.lessons
        if lesson["status"] == "DONE"
        and lesson["spec"] not in (None, MALFORMED_SPEC)
        and orjson.loads(lesson["spec"]).get("questions")
    }
    assert set(answered) == quizzed


def test_concept_mastery_counts_the_answers() -> None:
    # A concept is the lesson's topic, the first concept tag of each of its answers.
    rows = demo_rows()
    subject = {lesson["id"]: lesson["subject"] for lesson in rows.lessons}
    grouped: dict[tuple[object, ...], list[dict[str, Any]]] = {}
    for answer in rows.quiz_answers:
        concept = (answer["learner_id"], subject[answer["lesson_id"]], answer["concept_tags"][0])
        grouped.setdefault(concept, []).append(answer)
    assert len(rows.concept_mastery) == len(grouped) > 0
    for mastery in rows.concept_mastery:
        mine = grouped[mastery["learner_id"], mastery["subject"], mastery["concept_name"]]
        right = sum(a["is_correct"] for a in mine)
        assert (mastery["correct_count"], mastery["total_count"]) == (right, len(mine))
        assert mastery["mastery_level"] == round(100 * right / len(mine))
        assert mastery["needs_reinforcement"] == (mastery["mastery_level"] < 60)
        assert mastery["last_tested"] == max(a["answered_at"] for a in mine)


def test_the_optional_tables_hold_the_same_rows_on_both_databases(
    demo_source: DemoSource,
) -> None:
    engine = sa.create_engine(demo_source.owner_url)
    try:
        with engine.connect() as conn:
            answers = conn.execute(
                sa.text(
                    "SELECT count(*), sum(CASE WHEN is_correct THEN 1 ELSE 0 END) FROM quiz_answers"
                )
            ).one()
            mastery = conn.execute(sa.text("SELECT count(*) FROM concept_mastery")).scalar_one()
    finally:
        engine.dispose()
    rows = demo_source.rows
    assert tuple(answers) == (
        len(rows.quiz_answers),
        sum(a["is_correct"] for a in rows.quiz_answers),
    )
    assert mastery == len(rows.concept_mastery)


def test_a_larger_demo_only_adds_rows_after_a_smaller_ones() -> None:
    """`dev.py demo` builds more learners than the tests' demo: the rows of the first 12 (and so
    the golden documents) are the same in both, in every table."""
    small, large = demo_rows(12, 7), demo_rows(40, 7)
    for table in ("users", "learner_profiles", "lessons", "achievements", "quiz_answers",
                  "concept_mastery"):  # fmt: skip
        rows = getattr(small, table)
        assert getattr(large, table)[: len(rows)] == rows, table
    assert small.malformed == large.malformed
    # Both have their learner without a parent (the twelfth), and only one.
    for rows in (small, large):
        assert [
            u["id"] for u in rows.users if u["role"] == "LEARNER" and u["parent_id"] is None
        ] == [18]
