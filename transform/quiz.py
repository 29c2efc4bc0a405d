"""Quiz questions read out of a lesson spec, whatever shape the application stored.

Specs come in two shapes (contract §1): the current one, whose questions carry `options`, and the
older one, whose questions carry `choices`; and a spec may lack questions or hold them misshapen.
Nothing here raises on such data: what cannot be read becomes None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

OPTION_KEYS = ("options", "choices")
"""Where a question keeps its answer options, the current shape first."""

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class QuizQuestion:
    """One entry of a spec's `questions` list.

    `index` is the entry's position in that list (0-based), so a misshapen entry keeps its place:
    an entry that is not an object gives a question whose other fields are all None. `options` is
    None when the entry has no list under `options` or `choices`; `options_key` names the key it
    came from. Options that are not strings are kept as their JSON text (JSON null stays None).
    `correct_index` is None unless `correctIndex` is a JSON integer (not a bool) within int32;
    `correct_option` is the option it points at, None when it points outside the list.
    """

    index: int
    question: str | None = None
    options: list[str | None] | None = None
    options_key: str | None = None
    correct_index: int | None = None
    correct_option: str | None = None
    explanation: str | None = None


def spec_questions(spec: Any) -> list[QuizQuestion]:
    """The questions of a parsed spec, in list order; [] when it has no list under `questions`."""
    questions = spec.get("questions") if isinstance(spec, dict) else None
    if not isinstance(questions, list):
        return []
    return [_question(index, entry) for index, entry in enumerate(questions)]


def spec_title(spec: Any) -> str | None:
    """The spec's `title`, or the older shape's `topic`; None when neither is a string."""
    if not isinstance(spec, dict):
        return None
    for key in ("title", "topic"):
        value = spec.get(key)
        if isinstance(value, str):
            return value
    return None


def spec_topic(spec: Any, subject: str | None) -> str | None:
    """What the lesson is about, for grouping: the older shape's `topic`, or the current shape's
    `title` without a leading `<subject>: ` when `subject` is the lesson's own (`"Math: Fractions"`
    in a Math lesson is `"Fractions"`); a title with no such prefix is kept whole."""
    if not isinstance(spec, dict):
        return None
    title = spec.get("title")
    if isinstance(title, str):
        prefix = f"{subject}: " if subject else None
        return title.removeprefix(prefix) if prefix and title.startswith(prefix) else title
    topic = spec.get("topic")
    return topic if isinstance(topic, str) else None


def _question(index: int, entry: Any) -> QuizQuestion:
    if not isinstance(entry, dict):
        return QuizQuestion(index)
    options, options_key = _options(entry)
    correct = entry.get("correctIndex")
    if not (type(correct) is int and _INT32_MIN <= correct <= _INT32_MAX):
        correct = None  # `type() is int` on purpose: JSON true/false are bools, not indexes
    correct_option = None
    if options is not None and correct is not None and 0 <= correct < len(options):
        correct_option = options[correct]
    return QuizQuestion(
        index=index,
        question=_string(entry.get("question")),
        options=options,
        options_key=options_key,
        correct_index=correct,
        correct_option=correct_option,
        explanation=_string(entry.get("explanation")),
    )


def _options(entry: dict[str, Any]) -> tuple[list[str | None] | None, str | None]:
    for key in OPTION_KEYS:
        options = text_items(entry.get(key))
        if options is not None:
            return options, key
    return None, None


def text_items(value: Any) -> list[str | None] | None:
    """A JSON list as a list of strings: strings kept, JSON null as None, anything else as its
    JSON text. None when `value` is not a list."""
    if not isinstance(value, list):
        return None
    return [item if item is None or isinstance(item, str) else _json_text(item) for item in value]


def _json_text(item: Any) -> str:
    return orjson.dumps(item).decode()


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None
