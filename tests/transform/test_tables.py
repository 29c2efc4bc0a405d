"""transform/tables.py: the analyst tables of a chunk of learners."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pytest

from extract.records import LearnerRows
from learner_export.demo import MALFORMED_SPEC
from tests.analyst import KEY, OTHER_KEY, RUN, demo_learners, personal_values, question_counts
from tests.conftest import DemoSource
from transform.document import build_document
from transform.tables import (
    ACHIEVEMENTS_SCHEMA,
    LEARNERS_SCHEMA,
    LESSONS_SCHEMA,
    QUIZ_QUESTIONS_SCHEMA,
    TABLE_SCHEMAS,
    UNREADABLE_INTEGER,
    analyst_tables,
    build_analyst_tables,
)
from transform.values import MALFORMED_JSON, UNREADABLE_TIMESTAMP, Problem

EXPORT_DATE = datetime(2026, 1, 1, tzinfo=UTC)
PROFILE_TABLES = ("subject_performance", "knowledge_graph_nodes", "knowledge_graph_edges")


def lesson(lesson_id: str = "lesson-1", **values: Any) -> dict[str, Any]:
    """A lesson row whose every nullable column is NULL unless given."""
    row: dict[str, Any] = {
        "id": lesson_id,
        "learner_id": 3,
        "template_id": None,
        "module_id": None,
        "status": None,
        "subject": None,
        "category": None,
        "difficulty": None,
        "image_paths": None,
        "spec": None,
        "score": None,
        "created_at": None,
        "completed_at": None,
    }
    return row | values


def achievement(achievement_id: str = "a-1", **values: Any) -> dict[str, Any]:
    row = {"id": achievement_id, "learner_id": "3", "type": None, "payload": None}
    return row | {"awarded_at": None} | values


def learner(
    *lessons: dict[str, Any],
    learner_id: int = 3,
    achievements: tuple[dict[str, Any], ...] = (),
    profile: dict[str, Any] | None = None,
    checked: bool = False,
) -> LearnerRows:
    user = {
        "id": learner_id,
        "username": "kid-user",
        "email": "kid@example.com",
        "name": "Kid Name",
        "role": "LEARNER",
        "parent_id": 1,
        "created_at": None,
    }
    return LearnerRows(
        learner_id=learner_id,
        user=user,
        profile=profile,
        lessons=list(lessons),
        lesson_total=len(lessons),
        achievements=list(achievements),
        json_checked=checked,
    )


def quiz_rows(spec: Any) -> list[dict[str, Any]]:
    rows = [learner(lesson(spec=spec))]
    rows_out: list[dict[str, Any]] = analyst_tables(rows, pseudonym_key=KEY, run=RUN)[
        "quiz_questions"
    ].to_pylist()
    return rows_out


# --- the demo database, on SQLite and PostgreSQL ------------------------------------------------


def test_every_lesson_and_every_question_of_the_demo_is_present(demo_source: DemoSource) -> None:
    tables = analyst_tables(demo_learners(demo_source), pseudonym_key=KEY, run=RUN)
    learner_ids = set(demo_source.rows.learner_ids)
    expected_lessons = [row for row in demo_source.rows.lessons if row["learner_id"] in learner_ids]
    expected_questions = question_counts(demo_source.rows)

    lessons = tables["lessons"].to_pydict()
    assert len(lessons["lesson_id"]) > 1_000  # the big learner alone has more than the cap
    assert sorted(lessons["lesson_id"]) == sorted(row["id"] for row in expected_lessons)
    per_lesson = Counter(tables["quiz_questions"].column("lesson_id").to_pylist())
    assert per_lesson == +Counter(expected_questions)  # `+` drops the lessons without questions
    assert dict(zip(lessons["lesson_id"], lessons["question_count"], strict=True)) == {
        row["id"]: expected_questions[row["id"]] for row in expected_lessons
    }
    assert tables["quiz_questions"].num_rows == sum(expected_questions.values())
    assert tables["learners"].num_rows == len(learner_ids)
    assert tables["achievements"].num_rows == len(demo_source.rows.achievements)


def test_tables_have_exactly_the_declared_schemas(demo_source: DemoSource) -> None:
    tables = analyst_tables(demo_learners(demo_source), pseudonym_key=KEY, run=RUN)
    assert list(tables) == [
        "learners",
        "lessons",
        "quiz_questions",
        "achievements",
        "subject_performance",
        "knowledge_graph_nodes",
        "knowledge_graph_edges",
    ]
    assert list(TABLE_SCHEMAS) == [*tables, "quiz_answers", "concept_mastery"]
    for name, table in tables.items():
        assert table.schema.equals(TABLE_SCHEMAS[name], check_metadata=True), name
    assert TABLE_SCHEMAS["lessons"] is LESSONS_SCHEMA
    assert LESSONS_SCHEMA.field("created_at").type == pa.timestamp("ms", tz="UTC")
    assert not LESSONS_SCHEMA.field("learner_pseudonym").nullable
    assert LESSONS_SCHEMA.field("score").nullable


def test_every_column_is_filled_somewhere_in_the_demo(demo_source: DemoSource) -> None:
    # A misspelt key in the builder, or a driver type it cannot read, would leave its column
    # silently null: none is, here.
    tables = analyst_tables(demo_learners(demo_source), pseudonym_key=KEY, run=RUN)
    for name, table in tables.items():
        for column in table.column_names:
            assert table.column(column).null_count < table.num_rows, f"{name}.{column}"


def test_quiz_questions_read_both_spec_shapes(sqlite_demo: DemoSource) -> None:
    questions = analyst_tables(demo_learners(sqlite_demo), pseudonym_key=KEY, run=RUN)[
        "quiz_questions"
    ]
    assert set(questions.column("options_key").to_pylist()) == {"options", "choices"}
    for row in questions.to_pylist():
        assert row["option_count"] == len(row["options"]) == 4
        assert row["correct_option"] == row["options"][row["correct_index"]]
        assert row["question"].startswith(f"Question {row['question_index'] + 1} about ")


def test_timestamps_are_the_documents_instants(demo_source: DemoSource) -> None:
    learners = demo_learners(demo_source)
    tables = analyst_tables(learners, pseudonym_key=KEY, run=RUN)
    created = dict(
        zip(
            tables["lessons"].column("lesson_id").to_pylist(),
            tables["lessons"].column("created_at").to_pylist(),
            strict=True,
        )
    )
    compared = 0
    for rows in learners:
        document = build_document(rows, export_date=EXPORT_DATE, exported_by=None).document
        for item in document["lessons"]:
            moment = created[item["id"]]
            shown = None if moment is None else _iso_ms(moment)
            assert shown == item["createdAt"]
            compared += 1
    assert compared > 100


def _iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_malformed_json_is_a_problem_not_an_error(sqlite_demo: DemoSource) -> None:
    built = build_analyst_tables(demo_learners(sqlite_demo), pseudonym_key=KEY, run=RUN)
    (victim,) = [row_id for table, column, row_id in sqlite_demo.rows.malformed]
    assert built.problems == (Problem("lessons", "spec", victim, MALFORMED_JSON),)
    (row,) = [r for r in built.tables["lessons"].to_pylist() if r["lesson_id"] == victim]
    assert row["spec_malformed"] and not row["has_spec"] and row["question_count"] == 0
    assert row["spec_bytes"] == len(MALFORMED_SPEC.encode())


# --- nothing personal -----------------------------------------------------------------------------


def test_no_personal_identifier_in_any_table(demo_source: DemoSource) -> None:
    tables = analyst_tables(demo_learners(demo_source), pseudonym_key=KEY, run=RUN)
    for name, table in tables.items():
        for column in table.column_names:
            assert not {"name", "email", "user", "password", "parent"} & set(column.split("_")), (
                f"{name}.{column}"
            )
        text = orjson.dumps(table.to_pylist(), default=str).decode()
        for value in personal_values(demo_source.rows):
            assert value not in text, f"a personal value of the demo users is in {name}"


def test_pseudonyms_are_keyed_hmacs_stable_across_calls(sqlite_demo: DemoSource) -> None:
    learners = demo_learners(sqlite_demo)
    first = analyst_tables(learners, pseudonym_key=KEY, run=RUN)["learners"].column(
        "learner_pseudonym"
    )
    again = analyst_tables(learners, pseudonym_key=KEY, run=RUN)["learners"].column(
        "learner_pseudonym"
    )
    other = analyst_tables(learners, pseudonym_key=OTHER_KEY, run=RUN)["learners"]
    assert first.to_pylist() == again.to_pylist()
    assert not set(first.to_pylist()) & set(other.column("learner_pseudonym").to_pylist())
    expected = [
        hmac.new(KEY, str(rows.learner_id).encode(), hashlib.sha256).hexdigest()[:32]
        for rows in learners
    ]
    assert first.to_pylist() == expected
    assert len(set(expected)) == len(learners)


def test_every_table_names_a_learner_by_the_same_pseudonym() -> None:
    rows = learner(
        lesson(spec='{"questions": [{"question": "?"}]}'),
        achievements=(achievement(type="T"),),
        learner_id=42,
    )
    tables = analyst_tables([rows], pseudonym_key=KEY, run=RUN)
    names = {
        tuple(table.column("learner_pseudonym").to_pylist())
        for table in tables.values()
        if table.num_rows  # no profile: no performance or graph rows
    }
    assert len(names) == 1
    ((pseudonym,),) = names
    assert pseudonym == hmac.new(KEY, b"42", hashlib.sha256).hexdigest()[:32]


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        analyst_tables([], pseudonym_key=b"short", run=RUN)


# --- chunks of any shape --------------------------------------------------------------------------


def test_an_empty_chunk_gives_empty_tables_of_the_schemas() -> None:
    tables = analyst_tables([], pseudonym_key=KEY, run=RUN)
    for name, table in tables.items():
        assert table.num_rows == 0
        assert table.schema.equals(TABLE_SCHEMAS[name], check_metadata=True)


def test_an_all_null_chunk_keeps_the_declared_types() -> None:
    rows = learner(
        lesson("l-1", spec='{"questions": [{}]}'),
        lesson("l-2"),
        achievements=(achievement(),),
    )
    tables = analyst_tables([rows], pseudonym_key=KEY, run=RUN)
    for name, table in tables.items():
        assert table.num_rows > 0 or name in PROFILE_TABLES
        assert table.schema.equals(TABLE_SCHEMAS[name], check_metadata=True), name
    questions = tables["quiz_questions"]
    for column in ("question", "options", "correct_index", "explanation"):
        assert questions.column(column).null_count == questions.num_rows
    assert questions.schema.field("options").type == QUIZ_QUESTIONS_SCHEMA.field("options").type
    assert tables["lessons"].column("score").type == pa.int32()
    assert tables["learners"].to_pylist()[0] | {"learner_pseudonym": None} == {
        "run_id": RUN.run_id,
        "exported_at": RUN.exported_at,
        "learner_pseudonym": None,
        "grade_level": None,
        "has_profile": False,
        "subjects": None,
        "recommended_subjects": None,
        "struggling_areas": None,
        "created_at": None,
        "lessons_total": 2,
        "lessons_done": 0,
        "questions_total": 1,
        "achievements_total": 1,
    }
    assert ACHIEVEMENTS_SCHEMA.field("earned_at").type == pa.timestamp("ms", tz="UTC")
    assert LEARNERS_SCHEMA.field("subjects").nullable


def test_capped_lessons_are_refused() -> None:
    rows = learner(lesson())
    capped = LearnerRows(**{**_fields(rows), "lesson_total": 5})
    with pytest.raises(ValueError, match="1 of 5 lessons"):
        analyst_tables([capped], pseudonym_key=KEY, run=RUN)


def _fields(rows: LearnerRows) -> dict[str, Any]:
    return {name: getattr(rows, name) for name in LearnerRows.__dataclass_fields__}


HOSTILE_SPECS = [
    None,
    "null",
    "",
    "not json",
    MALFORMED_SPEC,
    '"a string"',
    "[]",
    "[1, 2]",
    "5",
    7,
    3.5,
    b'{"questions": [{"question": "bytes?"}]}',
    b"\xff\xfe",
    "{}",
    '{"questions": null}',
    '{"questions": "not a list"}',
    '{"questions": {"0": {"question": "an object, not a list"}}}',
    '{"questions": [1, "two", null, [], true]}',
    '{"questions": [{"question": 5, "options": "abc", "correctIndex": "1", "explanation": []}]}',
    '{"questions": [{"options": [1, null, {"a": 1}, [2], true], "correctIndex": 2}]}',
    '{"questions": [{"choices": ["a", "b"], "correctIndex": true}]}',
    '{"questions": [{"options": ["a"], "correctIndex": 1.0}]}',
    '{"questions": [{"options": ["a"], "correctIndex": 99}]}',
    '{"questions": [{"options": ["a"], "correctIndex": -1}]}',
    '{"questions": [{"options": ["a"], "correctIndex": 99999999999999999999}]}',
    '{"questions": [{"options": ["a"], "correctIndex": 1e400}]}',
    '{"questions": [{"question": "\\ud800 lone surrogate"}]}',
    '{"questions": [{"question": "nul \\u0000 byte"}]}',
    '{"title": 5, "topic": "Old", "questions": [{"options": ["x"], "choices": ["y", "z"]}]}',
]


@pytest.mark.parametrize("checked", [False, True])
@pytest.mark.parametrize("spec", HOSTILE_SPECS, ids=repr)
def test_hostile_specs_never_raise(spec: Any, checked: bool) -> None:
    rows = learner(lesson(spec=spec), checked=checked)
    built = build_analyst_tables([rows], pseudonym_key=KEY, run=RUN)
    (row,) = built.tables["lessons"].to_pylist()
    assert row["question_count"] == built.tables["quiz_questions"].num_rows
    assert row["spec_malformed"] == bool(built.problems)
    for name, table in built.tables.items():
        assert table.schema.equals(TABLE_SCHEMAS[name], check_metadata=True)


def test_misshapen_questions_keep_their_place() -> None:
    rows = quiz_rows('{"questions": [1, {"question": "Q", "choices": ["a", "b"]}, null]}')
    assert [(r["question_index"], r["question"], r["options"]) for r in rows] == [
        (0, None, None),
        (1, "Q", ["a", "b"]),
        (2, None, None),
    ]
    assert rows[1]["options_key"] == "choices" and rows[1]["option_count"] == 2


def test_options_that_are_not_strings_are_their_json_text() -> None:
    (row,) = quiz_rows('{"questions": [{"options": [1, null, {"a": 1}, true], "correctIndex": 2}]}')
    assert row["options"] == ["1", None, '{"a":1}', "true"]
    assert (row["correct_index"], row["correct_option"]) == (2, '{"a":1}')


@pytest.mark.parametrize(
    ("correct", "expected"),
    [("true", None), ('"1"', None), ("1.0", None), ("99", 99), ("-1", -1), ("4294967296", None)],
)
def test_a_correct_index_is_kept_only_when_it_is_an_int32(correct: str, expected: Any) -> None:
    (row,) = quiz_rows(f'{{"questions": [{{"options": ["a", "b"], "correctIndex": {correct}}}]}}')
    assert row["correct_index"] == expected
    assert row["correct_option"] is None


def test_unreadable_timestamps_and_integers_are_problems() -> None:
    rows = learner(lesson("l-1", created_at="yesterday-ish", score="high", image_paths="[oops"))
    built = build_analyst_tables([rows], pseudonym_key=KEY, run=RUN)
    assert set(built.problems) == {
        Problem("lessons", "created_at", "l-1", UNREADABLE_TIMESTAMP),
        Problem("lessons", "score", "l-1", UNREADABLE_INTEGER),
        Problem("lessons", "image_paths", "l-1", MALFORMED_JSON),
    }
    (row,) = built.tables["lessons"].to_pylist()
    assert (row["created_at"], row["score"], row["image_count"]) == (None, None, None)


def test_sqlite_timestamps_of_every_form_are_truncated_to_milliseconds() -> None:
    forms = [
        datetime(2024, 1, 15, 10, 30, 0, 999_999),
        "2024-01-15 10:30:00.999999",
        "2024-01-15T12:30:00.999999+02:00",
        1705314600.9999,
        1705314600999,
    ]
    rows = learner(*[lesson(f"l-{i}", created_at=form) for i, form in enumerate(forms)])
    created = analyst_tables([rows], pseudonym_key=KEY, run=RUN)["lessons"].column("created_at")
    assert {_iso_ms(moment) for moment in created.to_pylist()} == {"2024-01-15T10:30:00.999Z"}


def test_achievement_title_and_icon_come_from_the_payload() -> None:
    achievements = (
        {
            "id": "a-1",
            "learner_id": "3",
            "type": "STREAK_7",
            "payload": '{"title": "On Fire", "icon": "🔥"}',
            "awarded_at": "2024-03-01 09:00:00.123456",
        },
        achievement("a-2", type="X", payload="[]"),
        achievement("a-3", type="Y", payload='{"title": 5, "icon": {"emoji": "x"}}'),
    )
    rows = analyst_tables([learner(achievements=achievements)], pseudonym_key=KEY, run=RUN)
    got = rows["achievements"].to_pylist()
    assert [(r["achievement_id"], r["type"], r["title"], r["icon"]) for r in got] == [
        ("a-1", "STREAK_7", "On Fire", "🔥"),
        ("a-2", "X", None, None),
        ("a-3", "Y", None, None),
    ]
    assert _iso_ms(got[0]["earned_at"]) == "2024-03-01T09:00:00.123Z"


def test_text_columns_are_text_whatever_the_driver_returned() -> None:
    template = uuid.UUID("12345678-1234-5678-1234-567812345678")
    rows = learner(lesson(template_id=template, subject=7, category=b"Creative"))
    (row,) = analyst_tables([rows], pseudonym_key=KEY, run=RUN)["lessons"].to_pylist()
    assert (row["template_id"], row["subject"], row["category"]) == (str(template), "7", "Creative")


# --- what analysts group by ---------------------------------------------------------------------


def test_lessons_carry_the_specs_grade_level_topic_and_keywords() -> None:
    spec = '{"title": "Math: Fractions", "gradeLevel": 4, "keywords": ["half", 3], "questions": []}'
    rows = learner(
        lesson("l-1", subject="Math", spec=spec),
        lesson("l-2", subject="Science", spec=spec),  # another subject's prefix is kept
        lesson("l-3", subject="Math", spec='{"topic": "Plants", "gradeLevel": true}'),
    )
    lessons = analyst_tables([rows], pseudonym_key=KEY, run=RUN)["lessons"].to_pylist()
    picked = [(r["spec_title"], r["topic"], r["spec_grade_level"], r["keywords"]) for r in lessons]
    assert picked == [
        ("Math: Fractions", "Fractions", 4, ["half", "3"]),
        ("Math: Fractions", "Math: Fractions", 4, ["half", "3"]),
        ("Plants", "Plants", None, None),
    ]


def test_the_demo_specs_grade_level_is_kept_beside_the_profiles(sqlite_demo: DemoSource) -> None:
    tables = analyst_tables(demo_learners(sqlite_demo), pseudonym_key=KEY, run=RUN)
    lessons = tables["lessons"].to_pylist()
    grades = {r["learner_pseudonym"]: r["grade_level"] for r in tables["learners"].to_pylist()}
    differ = [
        r for r in lessons if r["spec_grade_level"] not in (None, grades[r["learner_pseudonym"]])
    ]
    assert differ  # the point: the lesson's grade is not the profile's
    prefixed = [r for r in lessons if (r["spec_title"] or "").startswith(f"{r['subject']}: ")]
    assert len(prefixed) > 100
    assert all(r["topic"] == r["spec_title"].split(": ", 1)[1] for r in prefixed)


def test_question_ids_are_the_lesson_id_and_the_index() -> None:
    spec = '{"questions": [{"question": "a"}, 7, {"question": "c"}]}'
    questions = analyst_tables([learner(lesson("l-9", spec=spec))], pseudonym_key=KEY, run=RUN)[
        "quiz_questions"
    ]
    assert questions.column("question_id").to_pylist() == ["l-9:0", "l-9:1", "l-9:2"]


def test_every_row_carries_the_run() -> None:
    rows = learner(lesson(spec='{"questions": [{}]}'), achievements=(achievement(),))
    for name, table in analyst_tables([rows], pseudonym_key=KEY, run=RUN).items():
        assert set(table.column("run_id").to_pylist()) <= {RUN.run_id}, name
        assert set(table.column("exported_at").to_pylist()) <= {RUN.exported_at}, name


def profile(**json_values: Any) -> dict[str, Any]:
    return {
        "id": "p-1", "user_id": 3, "grade_level": 2, "graph": None, "subjects": None,
        "subject_performance": None, "recommended_subjects": None, "struggling_areas": None,
        "created_at": None,
    } | json_values  # fmt: skip


def test_subject_performance_and_the_knowledge_graph_are_tables() -> None:
    performance = {
        "Math": {"averageScore": 81.5, "lessonsCompleted": 12},
        "Art": {"averageScore": "high"},
        "Odd": 3,
    }
    graph = {
        "nodes": [{"id": "n1", "label": "Halves", "mastery": 0.5}, {"id": 2}, "junk"],
        "edges": [{"source": "n1", "target": 2}],
    }
    rows = LearnerRows(
        learner_id=3, user={"id": 3, "created_at": None},
        profile=profile(subject_performance=orjson.dumps(performance), graph=orjson.dumps(graph)),
        lessons=[], lesson_total=0, achievements=[], json_checked=True,
    )  # fmt: skip
    tables = analyst_tables([rows], pseudonym_key=KEY, run=RUN)
    drop = ("run_id", "exported_at", "learner_pseudonym")
    plain = {
        name: tables[name].drop_columns(list(drop)).to_pylist()
        for name in ("subject_performance", "knowledge_graph_nodes", "knowledge_graph_edges")
    }
    assert plain == {
        "subject_performance": [
            {"subject": "Math", "average_score": 81.5, "lessons_completed": 12},
            {"subject": "Art", "average_score": None, "lessons_completed": None},
        ],
        "knowledge_graph_nodes": [
            {"node_index": 0, "node_id": "n1", "label": "Halves", "mastery": 0.5},
            {"node_index": 1, "node_id": "2", "label": None, "mastery": None},
            {"node_index": 2, "node_id": None, "label": None, "mastery": None},
        ],
        "knowledge_graph_edges": [{"edge_index": 0, "source": "n1", "target": "2"}],
    }


def test_the_demo_profiles_give_performance_and_graph_rows(demo_source: DemoSource) -> None:
    tables = analyst_tables(demo_learners(demo_source), pseudonym_key=KEY, run=RUN)
    profiles = [p for p in demo_source.rows.learner_profiles if p["graph"] is not None]
    assert tables["subject_performance"].num_rows == sum(
        len(orjson.loads(p["subject_performance"])) for p in profiles
    )
    assert tables["knowledge_graph_nodes"].num_rows == 2 * len(profiles)
    assert tables["knowledge_graph_edges"].num_rows == len(profiles)
