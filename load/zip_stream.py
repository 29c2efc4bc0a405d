"""A zip archive written as a stream of bytes, for a family's bundle sent over HTTP or to a file.

The standard library's `zipfile` writes to a stream that cannot seek: each member's sizes and CRC
then follow its data (a data descriptor), so nothing already sent is ever revisited. The bytes
come out member by member, never the whole archive at once.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

ZIP_LEVEL = 6
"""Deflate level of the members: JSON and HTML text shrink about 5:1."""

_FILE_ATTRIBUTES = 0o100600 << 16
"""Members unpack readable by their owner only: they hold a child's data."""


class _Sink:
    """A write-only, non-seekable file collecting what zipfile writes until it is taken."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._pieces.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: the pieces are taken by `iter_zip`."""

    def close(self) -> None:
        """Nothing to close: the pieces are taken by `iter_zip`."""

    def take(self) -> bytes:
        data, self._pieces = b"".join(self._pieces), []
        return data


def iter_zip(members: Iterable[tuple[str, bytes]], *, modified: datetime) -> Iterator[bytes]:
    """The bytes of a zip holding `members` (name, data) in order, each member's bytes yielded
    as soon as it is compressed. Every member is stamped `modified` (UTC), so the same members
    and time give the same archive."""
    stamp = modified.astimezone(UTC) if modified.tzinfo else modified
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=stamp.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = _FILE_ATTRIBUTES
            archive.writestr(info, data, compresslevel=ZIP_LEVEL)
            yield sink.take()
    yield sink.take()  # the central directory, written when the archive closes
