"""transform/quiz.py: quiz questions out of specs of either shape, or of none."""

from __future__ import annotations

from typing import Any

import pytest

from transform.quiz import QuizQuestion, spec_questions, spec_title, text_items


def test_the_current_shape() -> None:
    spec = {
        "title": "Math: Fractions",
        "questions": [
            {"question": "1/2 + 1/2?", "options": ["1", "2"], "correctIndex": 0, "explanation": "!"}
        ],
    }
    assert spec_questions(spec) == [
        QuizQuestion(0, "1/2 + 1/2?", ["1", "2"], "options", 0, "1", "!")
    ]
    assert spec_title(spec) == "Math: Fractions"


def test_the_older_shape() -> None:
    spec = {
        "topic": "Plants",
        "questions": [{"question": "?", "choices": ["a"], "correctIndex": 0}],
    }
    assert spec_questions(spec) == [QuizQuestion(0, "?", ["a"], "choices", 0, "a", None)]
    assert spec_title(spec) == "Plants"


def test_options_win_over_choices_only_when_they_are_a_list() -> None:
    (question,) = spec_questions({"questions": [{"options": "x", "choices": ["y"]}]})
    assert (question.options, question.options_key) == (["y"], "choices")


@pytest.mark.parametrize(
    "spec", [None, 5, "text", [], {}, {"questions": None}, {"questions": {"0": {}}}]
)
def test_no_question_list_means_no_questions(spec: Any) -> None:
    assert spec_questions(spec) == []
    assert spec_title(spec) is None


def test_entries_that_are_not_objects_keep_their_index() -> None:
    assert spec_questions({"questions": [None, "q", 3]}) == [QuizQuestion(i) for i in range(3)]


def test_text_items() -> None:
    assert text_items(["a", None, 1, 2.5, True, {"b": [1]}]) == [
        "a",
        None,
        "1",
        "2.5",
        "true",
        '{"b":[1]}',
    ]
    assert text_items("abc") is None
