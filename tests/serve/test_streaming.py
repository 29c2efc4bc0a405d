"""The streamed body and its audit hook, driven directly over ASGI (no network needed for the
failure cases: a client that leaves is a `send` that raises)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from serve import (
    STREAM_CHUNK_BYTES,
    AuditedResponse,
    AuditedStreamingResponse,
    EncodedDocument,
    Transfer,
    streamed_body,
)
from transform.document import BuiltDocument
from transform.encoding import encode_document

SCOPE = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET", "headers": []}


def _built(lessons: int) -> BuiltDocument:
    document = {
        "learner": {"id": 3},
        "profile": None,
        "lessons": [{"id": f"l{i}", "spec": {"text": "x" * 5000}} for i in range(lessons)],
        "achievements": [],
        "exportDate": "2024-01-15T12:00:00.000Z",
        "exportedBy": 1,
    }
    return BuiltDocument(document, 3, lessons, lessons, ())


async def _collect(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in body])


@pytest.mark.parametrize("use_gzip", [False, True])
def test_the_stream_is_the_encoded_document(use_gzip: bool) -> None:
    built = _built(300)
    encoded = EncodedDocument.of(built)
    transfer = Transfer()
    sent = asyncio.run(_collect(streamed_body(encoded.body, gzip=use_gzip, transfer=transfer)))
    expected = encode_document(built.document)
    assert len(expected) > 4 * STREAM_CHUNK_BYTES  # several pieces
    assert (gzip.decompress(sent) if use_gzip else sent) == expected
    assert transfer.complete
    assert transfer.size == len(expected)
    # The audit line, written before the first byte, names exactly the bytes that are streamed.
    assert encoded.body == expected
    assert encoded.sha256 == hashlib.sha256(expected).hexdigest()
    assert (encoded.lessons_exported, encoded.lessons_total) == (300, 300)


def _run(response: AuditedStreamingResponse, fail_after: int | None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # a client that never says it left: only `send` fails
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if fail_after is not None and len(messages) >= fail_after:
            raise OSError("the client went away")
        messages.append(message)

    async def main() -> None:
        await response(SCOPE, receive, send)

    if fail_after is None:
        asyncio.run(main())
    else:
        with pytest.raises((OSError, ClientDisconnect)):  # Starlette wraps the OSError
            asyncio.run(main())
    return messages


@pytest.mark.parametrize(
    ("fail_after", "complete"),
    [(None, True), (0, False), (1, False), (2, False)],
    ids=["whole", "never-started", "after-headers", "mid-body"],
)
def test_on_close_runs_once_however_the_transfer_ends(
    fail_after: int | None, complete: bool
) -> None:
    transfer = Transfer()
    closed: list[bool] = []
    response = AuditedStreamingResponse(
        streamed_body(EncodedDocument.of(_built(300)).body, gzip=False, transfer=transfer),
        on_close=lambda: closed.append(transfer.complete),
        media_type="application/json",
    )
    _run(response, fail_after)
    assert closed == [complete]


@pytest.mark.parametrize(
    ("fail_after", "complete"),
    [(None, True), (0, False), (1, False)],
    ids=["whole", "never-started", "after-headers"],
)
def test_a_one_piece_answer_closes_once_and_counts_the_documents_bytes(
    fail_after: int | None, complete: bool
) -> None:
    body = encode_document(_built(3).document)
    sent = gzip.compress(body)  # a content encoding: the transfer still counts the document
    transfer = Transfer()
    closed: list[tuple[bool, int]] = []
    response = AuditedResponse(
        sent, size=len(body), transfer=transfer,
        on_close=lambda: closed.append((transfer.complete, transfer.size)),
        media_type="application/json",
    )  # fmt: skip
    messages = _run(response, fail_after)
    assert closed == [(complete, len(body) if complete else 0)]
    if complete:
        start, whole = messages
        assert (b"content-length", str(len(sent)).encode()) in start["headers"]
        assert (whole["body"], whole.get("more_body", False)) == (sent, False)
