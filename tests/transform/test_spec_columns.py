"""transform/spec_columns.py: specs read in batches by Arrow give the tables Python gives."""

from __future__ import annotations

from typing import Any

import pytest

from tests.analyst import KEY, RUN, demo_learners
from tests.conftest import DemoSource
from tests.transform.test_tables import learner, lesson
from transform.spec_columns import read_specs
from transform.tables import LearnerTableRows


def tables_both_ways(learners: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    batched, one_by_one = LearnerTableRows(KEY), LearnerTableRows(KEY, batch_specs=False)
    for rows in learners:
        batched.add(rows)
        one_by_one.add(rows)
    return batched.take(RUN), one_by_one.take(RUN)


def test_the_demo_gives_the_same_tables_both_ways(demo_source: DemoSource) -> None:
    batched, one_by_one = tables_both_ways(demo_learners(demo_source))
    for name, table in one_by_one.items():
        assert batched[name].equals(table), name
    assert batched["quiz_questions"].num_rows > 5_000


def test_batches_arrow_can_read_are_read_by_arrow(postgres_demo: DemoSource) -> None:
    # On PostgreSQL every demo spec is a valid object of the expected shape.
    specs = [row["spec"] for rows in demo_learners(postgres_demo) for row in rows.lessons]
    columns = read_specs(specs, checked=True)
    assert not any(columns.slow)
    assert sum(columns.question_count) == len(columns.question_index)
    assert columns.present.count(False) == sum(spec is None for spec in specs)


HOSTILE = [
    '{"title": 5}',
    '{"questions": [1, {"question": "q"}]}',
    '{"questions": [{"options": [1, "b"], "correctIndex": 1}]}',
    '{"gradeLevel": 4.0}',
    '{"gradeLevel": true, "title": "x"}',
    '{"title": "a", "title": "b"}',
    '{"x": NaN}',
    "[1, 2]",
    '"text"',
    '{"questions": {"0": {}}}',
    '{"keywords": [true, "k"]}',
    '{"questions": [{"correctIndex": 99999999999999999999}]}',
    '{"cut": ',
]


@pytest.mark.parametrize("spec", HOSTILE)
def test_a_spec_of_another_shape_is_read_by_python_and_the_rest_by_arrow(spec: str) -> None:
    good = '{"title": "Math: Halves", "gradeLevel": 3, "questions": [{"question": "q", "options": ["a", "b"], "correctIndex": 1}]}'
    rows = learner(
        lesson("l-1", subject="Math", spec=good),
        lesson("l-2", subject="Math", spec=spec),
        lesson("l-3", subject="Math", spec=good.replace("\n", "")),
    )
    columns = read_specs([good, spec, good], checked=False)
    assert columns.slow == [False, True, False]
    assert columns.question_count == [1, 0, 1]
    batched, one_by_one = tables_both_ways([rows])
    for name, table in one_by_one.items():
        assert batched[name].equals(table), name


def test_well_typed_edge_cases_agree_both_ways() -> None:
    specs = [
        '{"title": "Math: A", "questions": [null, {"choices": ["x", null], "correctIndex": 1}]}',
        '{\n  "topic": "Plants",\n  "questions": [{"options": [], "correctIndex": 0}]\r\n}',
        '{"questions": [{"options": ["a"], "choices": ["b", "c"], "correctIndex": 3000000000}]}',
        '{"questions": [{"options": null, "choices": ["b", "c"], "correctIndex": -1}]}',
        '{"title": "Science: B", "gradeLevel": 99999999999, "keywords": []}',
        "null",
        None,
        '{"questions": null, "unknown": {"deep": [1, 2, {"x": null}]}}',
        '{"title": "ünï 🎉: code", "questions": [{"question": "é", "explanation": "ok"}]}',
    ]
    rows = learner(*(lesson(f"l-{i}", subject="Math", spec=s) for i, s in enumerate(specs)))
    assert not any(read_specs(specs, checked=False).slow)
    batched, one_by_one = tables_both_ways([rows])
    for name, table in one_by_one.items():
        assert batched[name].equals(table), (name, batched[name].to_pylist(), table.to_pylist())


def test_bytes_from_postgresql_and_text_from_sqlite_read_alike() -> None:
    spec = '{"title": "Math: A", "questions": [{"question": "q", "options": ["1"]}]}'
    as_text = read_specs([spec], checked=False)
    as_bytes = read_specs([spec.encode()], checked=True)
    assert as_text.title == as_bytes.title == ["Math: A"]
    assert as_text.questions["options"].equals(as_bytes.questions["options"])


def test_many_odd_specs_among_many_keep_their_places() -> None:
    good = '{"title": "Math: %d", "questions": [{"question": "q%d"}, {"question": "r"}]}'
    specs = [good % (i, i) if i % 7 else f'{{"title": {i}}}' for i in range(200)]
    rows = learner(*(lesson(f"l-{i:03}", subject="Math", spec=s) for i, s in enumerate(specs)))
    columns = read_specs(specs, checked=False)
    assert [i for i, odd in enumerate(columns.slow) if odd] == list(range(0, 200, 7))
    batched, one_by_one = tables_both_ways([rows])
    for name, table in one_by_one.items():
        assert batched[name].equals(table), name
