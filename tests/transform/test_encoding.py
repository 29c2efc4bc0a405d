"""transform.encoding: the streamed pieces are exactly the whole document's bytes."""

from __future__ import annotations

import orjson
import pytest

from tests.factories import EXPORT_DATE, learner_rows, lesson_row
from transform.document import build_document
from transform.encoding import encode_document, iter_encoded


@pytest.mark.parametrize("lessons", [0, 1, 63, 64, 65, 1_000])
@pytest.mark.parametrize("batch", [1, 7, 64])
def test_streamed_bytes_equal_whole_bytes(lessons: int, batch: int) -> None:
    rows = learner_rows(lessons=[lesson_row(id=f"l{i}") for i in range(lessons)])
    document = build_document(rows, export_date=EXPORT_DATE, exported_by=None).document
    pieces = list(iter_encoded(document, batch=batch))
    assert b"".join(pieces) == encode_document(document)
    # Streamed: no piece holds more than `batch` lessons (each lesson has one "learnerId").
    assert max(piece.count(b'"learnerId":') for piece in pieces) <= batch


def test_encoding_is_compact_utf8_in_key_order() -> None:
    assert encode_document({"b": "é🌟", "a": [1, None]}) == '{"b":"é🌟","a":[1,null]}'.encode()


def test_fragments_are_copied_verbatim() -> None:
    document = {"spec": orjson.Fragment('{ "kept" : "as stored" }')}
    assert encode_document(document) == b'{"spec":{ "kept" : "as stored" }}'
    assert b"".join(iter_encoded(document)) == encode_document(document)
