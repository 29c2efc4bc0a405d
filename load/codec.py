"""How a document's bytes are stored at rest, both ways: the one encoder and the one decoder of
stored documents, for the archive, `verify`, `decrypt` and `restore` alike.

Order is fixed: compress first (encrypted bytes do not compress), then encrypt. The name's
suffixes say what was applied, innermost first (contract §4):

    learner-data-3-2024-01-15.json             plain JSON
    learner-data-3-2024-01-15.json.gz          gzip
    learner-data-3-2024-01-15.json.zst         Zstandard
    ... .json.enc, .json.gz.enc, .json.zst.enc  then encrypted (one Fernet token)

Compression is deterministic (gzip without a timestamp), so the same document gives the same
stored bytes; Fernet tokens carry a random IV and a timestamp, so encrypted bytes differ from run
to run while decrypting to the same document.

Decoding is bounded: a file is refused (`StoredDocumentError`) as soon as it has inflated past
`inflation_limit` of its stored size, so a decompression bomb costs a fraction of a second and at
most that much memory. Errors name the file, never its content nor the key.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import zstandard
from cryptography.fernet import Fernet, InvalidToken

from load.errors import TerminalLoadError

if TYPE_CHECKING:
    from pydantic import SecretStr

Compression = Literal["gzip", "zstd"]

COMPRESSION_SUFFIXES: dict[Compression, str] = {"gzip": ".gz", "zstd": ".zst"}
ENCRYPTION_SUFFIX = ".enc"
ZSTD_LEVEL = 10

MAX_DOCUMENT_BYTES = 2 * 1024**3
"""No stored document decodes to more: a 1,000-lesson document with large specs is some hundreds
of MB, and a hostile or damaged file must not fill the memory."""
MAX_EXPANSION = 1000
"""Nor to more than this many times its stored size. Real documents compress 5-50x (a learner
with many lessons of one template perhaps some hundreds), gzip cannot exceed ~1,032x at all, while
a Zstandard bomb reaches ~32,000x; so a bomb is refused after inflating to a thousand times its
size, long before MAX_DOCUMENT_BYTES."""
EXPANSION_FLOOR = 64 * 1024**2
"""Below this many bytes the expansion is never questioned (small, very regular documents)."""

_READ_STEP = 1024 * 1024
"""Decompressed bytes asked for per gzip read."""
_ZSTD_STEP = 1024
"""Compressed bytes fed per Zstandard step: a step can inflate to at most ~32 MB (one 128 KiB
block per 4 bytes), so the limit is checked before the output can overshoot by more."""


class StoredDocumentError(TerminalLoadError):
    """A stored document that cannot be read back into JSON bytes (named, with the reason)."""


@dataclass(frozen=True, slots=True)
class DocumentFormat:
    """What was done to a document's bytes, innermost first."""

    compression: Compression | None
    encrypted: bool

    @property
    def suffix(self) -> str:
        """The file name's ending after `.json` (e.g. ".gz.enc")."""
        compressed = COMPRESSION_SUFFIXES[self.compression] if self.compression else ""
        return compressed + (ENCRYPTION_SUFFIX if self.encrypted else "")


def stored_suffix(compression: Compression | None, *, encrypted: bool) -> str:
    """What follows `.json` in a stored document's name."""
    return DocumentFormat(compression, encrypted).suffix


def stored_format(name: str) -> DocumentFormat:
    """The format a file name's suffixes announce (any name: a renamed download too)."""
    encrypted = name.endswith(ENCRYPTION_SUFFIX)
    stem = name.removesuffix(ENCRYPTION_SUFFIX)
    for compression, suffix in COMPRESSION_SUFFIXES.items():
        if stem.endswith(suffix):
            return DocumentFormat(compression, encrypted)
    return DocumentFormat(None, encrypted)


def document_format(name: str) -> DocumentFormat | None:
    """The format of a document file's name (`X.json` plus suffixes), or None when the name is
    not a document's (a Parquet part, a note)."""
    plain = plain_name(name)
    if plain.endswith(".json") and len(plain) > len(".json"):
        return stored_format(name)
    return None


def plain_name(name: str) -> str:
    """The name a stored file decodes to (its compression and encryption suffixes off)."""
    name = name.removesuffix(ENCRYPTION_SUFFIX)
    for suffix in COMPRESSION_SUFFIXES.values():
        name = name.removesuffix(suffix)
    return name


def fernet_from_key(key: str | bytes) -> Fernet:
    """A Fernet for `key` (url-safe base64 of 32 bytes); a one-line error naming no key bytes."""
    try:
        return Fernet(key.encode("ascii") if isinstance(key, str) else key)
    except (ValueError, UnicodeEncodeError):
        raise TerminalLoadError(
            "the configured encryption key (LEARNER_EXPORT_ENCRYPTION_KEY) is not a Fernet key "
            "(32 url-safe base64-encoded bytes; make one with: python -c 'from "
            "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from None


def configured_fernet(key: SecretStr | None) -> Fernet | None:
    """The Fernet of the configured key (`Settings.encryption_key`), or None when there is none."""
    return None if key is None else fernet_from_key(key.get_secret_value())


def encode_stored(
    data: bytes, compression: Compression | None, fernet: Fernet | None = None
) -> bytes:
    """`data` as stored: compressed with `compression`, then encrypted when `fernet` is given."""
    if compression == "gzip":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    elif compression == "zstd":
        data = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if fernet is not None:
        data = fernet.encrypt(data)
    return data


def decode_stored(name: str, data: bytes, fernet: Fernet | None = None) -> bytes:
    """The document bytes inside a stored file, undoing the suffixes of `name` right to left.

    `data` is the file's whole content. Raises `StoredDocumentError` (naming the file, never its
    content) when it is encrypted and no key is given, the key is wrong or the token was altered,
    the compressed data is damaged or truncated, or it inflates past `inflation_limit`.
    """
    fmt = stored_format(name)
    if fmt.encrypted:
        data = _decrypt(data, fernet, name)
    if fmt.compression == "gzip":
        return _gunzip(data, name)
    if fmt.compression == "zstd":
        return _unzstd(data, name)
    return data


def inflation_limit(stored_bytes: int) -> int:
    """The most that `stored_bytes` of compressed data may decode to."""
    return min(MAX_DOCUMENT_BYTES, max(EXPANSION_FLOOR, MAX_EXPANSION * stored_bytes))


def _decrypt(data: bytes, fernet: Fernet | None, name: str) -> bytes:
    if fernet is None:
        raise StoredDocumentError(
            f"{name}: is encrypted and no encryption key is configured "
            "(set LEARNER_EXPORT_ENCRYPTION_KEY)"
        )
    try:
        return fernet.decrypt(data)
    except InvalidToken:
        raise StoredDocumentError(
            f"{name}: cannot be decrypted: wrong key, or the file was altered"
        ) from None


class _Output:
    """Decompressed pieces, refused past the inflation limit of the compressed input."""

    __slots__ = ("limit", "name", "pieces", "total")

    def __init__(self, name: str, stored_bytes: int) -> None:
        self.name = name
        self.limit = inflation_limit(stored_bytes)
        self.pieces: list[bytes] = []
        self.total = 0

    def add(self, piece: bytes) -> None:
        self.total += len(piece)
        if self.total > self.limit:
            raise StoredDocumentError(
                f"{self.name}: decompresses to more than {self.limit} bytes; refused "
                "(a damaged file or a decompression bomb, not an export document)"
            )
        self.pieces.append(piece)

    def join(self) -> bytes:
        return b"".join(self.pieces)


def _gunzip(data: bytes, name: str) -> bytes:
    output = _Output(name, len(data))
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while piece := stream.read(_READ_STEP):
                output.add(piece)
    except (OSError, EOFError, zlib.error):
        raise StoredDocumentError(
            f"{name}: is not valid gzip data (damaged or truncated)"
        ) from None
    return output.join()


def _unzstd(data: bytes, name: str) -> bytes:
    """Every frame of `data`, decompressed; a frame cut short is an error (a stream reader would
    return the part it got, silently)."""
    decompressor = zstandard.ZstdDecompressor()
    output = _Output(name, len(data))
    remaining = data
    try:
        while remaining:
            frame = decompressor.decompressobj()
            start = 0
            while start < len(remaining) and not frame.eof:
                output.add(frame.decompress(remaining[start : start + _ZSTD_STEP]))
                start += _ZSTD_STEP
            if not frame.eof:
                raise StoredDocumentError(f"{name}: is not valid Zstandard data (truncated)")
            remaining = frame.unused_data + remaining[start:]
    except zstandard.ZstdError:
        raise StoredDocumentError(f"{name}: is not valid Zstandard data (damaged)") from None
    return output.join()
