"""The one encoder: a document to bytes, whole or as a stream of pieces.

orjson writes compact UTF-8 JSON with keys in insertion order; stored JSON arrives as
`orjson.Fragment` and is copied through verbatim. `iter_encoded` yields exactly the bytes of
`encode_document`, split so a server can send a 1,000-lesson document without first holding
all of its bytes in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

STREAMED_KEY = "lessons"
"""The one top-level list that can be large; it is encoded an element at a time."""


def encode_document(document: dict[str, Any]) -> bytes:
    """The document's bytes: compact JSON, keys in document order, no trailing newline."""
    return orjson.dumps(document)


def iter_encoded(document: dict[str, Any], *, batch: int = 64) -> Iterator[bytes]:
    """The bytes of `encode_document(document)`, in pieces of at most `batch` lessons each.

    Invariant: `b"".join(iter_encoded(d)) == encode_document(d)` for every document.
    """
    dumps = orjson.dumps
    yield b"{"
    for index, (key, value) in enumerate(document.items()):
        head = (b"," if index else b"") + dumps(key) + b":"
        if key != STREAMED_KEY or not isinstance(value, list) or not value:
            yield head + dumps(value)
            continue
        yield head + b"["
        for start in range(0, len(value), batch):
            pieces = [dumps(item) for item in value[start : start + batch]]
            yield (b"," if start else b"") + b",".join(pieces)
        yield b"]"
    yield b"}"
