"""Many lesson specs read at once by Arrow's JSON reader, in C++ and outside Python's GIL.

The analyst tables need a few fields of every spec (title, topic, grade level, keywords, the quiz)
and specs are most of an archive's bytes: reading them one by one in Python made the tables cost
more than the documents. `read_specs` hands a batch of stored specs to `pyarrow.json` with an
explicit schema of just those fields. The reader is strict (a field of another JSON type, a
duplicate key, a spec that is not an object: it refuses), and such a spec is marked; the caller reads
the spec the slow way (`transform.quiz`), whose answers for well-typed specs are the same:
`tests/transform/test_spec_columns.py` compares the two on the demo and on hostile specs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from transform.values import is_json_null

_TEXTS = pa.list_(pa.string())
_QUESTION = pa.struct(
    [
        ("question", pa.string()),
        ("options", _TEXTS),
        ("choices", _TEXTS),
        ("correctIndex", pa.int64()),
        ("explanation", pa.string()),
    ]
)
_SPEC = pa.schema(
    [
        ("title", pa.string()),
        ("topic", pa.string()),
        ("gradeLevel", pa.int64()),
        ("keywords", _TEXTS),
        ("questions", pa.list_(_QUESTION)),
    ]
)
_PARSE = pj.ParseOptions(explicit_schema=_SPEC, unexpected_field_behavior="ignore")
_BLOCK_BYTES = 1 << 24
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True, slots=True)
class SpecColumns:
    """The fields of a batch of specs, one entry per spec in batch order.

    `present[i]` is False for a NULL (or JSON `null`) spec, whose other fields are None / 0;
    `slow[i]` is True for a spec left to the slow path (its other fields are those of `{}`).
    `grade_level` is None unless an int32. `questions` holds the fields of every question of
    every spec, by JSON key (all null for an entry that is JSON null; `correctIndex` None outside
    int32), `question_spec` the batch position of its spec and `question_index` its place in the
    spec's list.
    """

    present: list[bool]
    slow: list[bool]
    title: list[str | None]
    topic: list[str | None]
    grade_level: list[int | None]
    keywords: list[list[str | None] | None]
    question_count: list[int]
    questions: dict[str, pa.Array]
    question_spec: pa.Array
    question_index: pa.Array


def read_specs(stored: Sequence[Any], *, checked: bool) -> SpecColumns:
    """The fields of these stored specs (text or its UTF-8 bytes, or NULL); the specs Arrow
    cannot read as the slow path would (malformed JSON, another JSON type where a field is read,
    a duplicate key, a spec that is not an object) are marked `slow`, with empty fields here.

    Unless `checked` (the database guarantees valid JSON), each text is first parsed by orjson,
    the parser of the slow path, so that both agree on what is valid JSON. A batch Arrow refuses
    is cut in halves until the specs it refuses are found, so one odd spec costs a few re-reads,
    not the batch.
    """
    lines: list[bytes] = []
    present: list[bool] = []
    slow: list[bool] = []
    for value in stored:
        try:
            line = _line(value, checked=checked)
        except _SlowPath:
            line, odd = None, True
        else:
            odd = False
        present.append(line is not None)
        slow.append(odd)
        lines.append(b"{}" if line is None else line)
    table = _read(lines, slow, 0)
    lists = table.column("questions").combine_chunks()
    parents = pc.list_parent_indices(lists)
    starts = pc.take(lists.offsets, parents)
    index = pc.subtract(pa.array(range(len(parents)), pa.int64()), starts)
    # flatten() gives each field with the entry's own nulls merged in: a JSON null entry has
    # every field null, as the slow path's question of an entry that is not an object.
    fields = dict(zip(_QUESTION.names, pc.list_flatten(lists).flatten(), strict=True))
    correct = fields["correctIndex"]
    inside = pc.and_(pc.greater_equal(correct, _INT32_MIN), pc.less_equal(correct, _INT32_MAX))
    fields["correctIndex"] = pc.if_else(inside, correct, None)
    return SpecColumns(
        present=present,
        slow=slow,
        title=table.column("title").to_pylist(),
        topic=table.column("topic").to_pylist(),
        grade_level=[_int32(v) for v in table.column("gradeLevel").to_pylist()],
        keywords=table.column("keywords").to_pylist(),
        question_count=pc.fill_null(pc.list_value_length(lists), 0).to_pylist(),
        questions=fields,
        question_spec=parents,
        question_index=pc.cast(index, pa.int32()),
    )


def _read(lines: list[bytes], slow: list[bool], start: int) -> pa.Table:
    """`lines` read by Arrow, one row each; a line it refuses is read as `{}` and marked in
    `slow` (whose entry `start` is `lines[0]`'s)."""
    if not lines:
        return _SPEC.empty_table()
    try:
        table = pj.read_json(
            pa.BufferReader(b"\n".join(lines)),
            read_options=pj.ReadOptions(use_threads=True, block_size=_BLOCK_BYTES),
            parse_options=_PARSE,
        )
        if table.num_rows == len(lines):
            return table
    except (ValueError, pa.ArrowException):  # ArrowInvalid and UnicodeDecodeError are both
        pass
    if len(lines) == 1:
        slow[start] = True
        return _read([b"{}"], slow, start)
    half = len(lines) // 2
    return pa.concat_tables(
        [_read(lines[:half], slow, start), _read(lines[half:], slow, start + half)]
    )


class _SlowPath(Exception):
    """A stored spec that only the slow path can read (or tell malformed)."""


def _line(value: Any, *, checked: bool) -> bytes | None:
    """The spec as one line of NDJSON; None for NULL. Raises _SlowPath when Arrow cannot read
    it the way the slow path would."""
    if value is None or is_json_null(value):
        return None
    if isinstance(value, bytearray | memoryview):
        text = bytes(value)
    elif isinstance(value, bytes):
        text = value
    elif isinstance(value, str):
        try:
            text = value.encode()
        except UnicodeEncodeError:  # a lone surrogate
            raise _SlowPath from None
    else:
        raise _SlowPath  # a number SQLite made of numeric text
    if not checked:
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            raise _SlowPath from None
    # JSON text may hold raw line breaks between tokens (never inside strings): spaces then.
    if b"\n" in text or b"\r" in text:
        text = text.replace(b"\n", b" ").replace(b"\r", b" ")
    return text


def _int32(value: int | None) -> int | None:
    return value if value is not None and _INT32_MIN <= value <= _INT32_MAX else None
