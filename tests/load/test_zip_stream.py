"""The streamed zip: valid, members in order and intact, written without a seekable file."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime

from load.zip_stream import iter_zip

WHEN = datetime(2024, 2, 1, 12, 30, tzinfo=UTC)


def test_the_pieces_make_a_valid_zip_of_the_members() -> None:
    members = [("a.json", b'{"a":1}' * 1000), ("b.html", "<p>é</p>".encode()), ("empty", b"")]
    pieces = list(iter_zip(members, modified=WHEN))
    assert len(pieces) == len(members) + 1  # one per member, then the central directory
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.testzip() is None
    assert [(i.filename, archive.read(i)) for i in archive.infolist()] == members
    assert {i.date_time for i in archive.infolist()} == {(2024, 2, 1, 12, 30, 0)}
    assert {i.external_attr >> 16 for i in archive.infolist()} == {0o100600}
    assert b"".join(iter_zip(members, modified=WHEN)) == b"".join(pieces)  # deterministic
