"""Reading export documents back from disk: the inverse of how the export and archival flows
write them.

The file name says what was done to the bytes, innermost first (contract §4):

    learner-data-3-2024-01-15.json             plain JSON
    learner-data-3-2024-01-15.json.gz          gzip
    learner-data-3-2024-01-15.json.zst         Zstandard
    ... .json.enc, .json.gz.enc, .json.zst.enc  then encrypted

Encryption is applied after compression; an encrypted file's content is one Fernet token (the
`cryptography` package) made with the key in `Settings.encryption_key`. Only the name prefix
`learner-data-` is optional here: a user may have renamed a download.

Errors (`DocumentFileError`) name the file, never its content.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard
from cryptography.fernet import Fernet, InvalidToken

from load.errors import TerminalLoadError

if TYPE_CHECKING:
    from pydantic import SecretStr

ENCRYPTED_SUFFIX = ".enc"
COMPRESSIONS = ("", ".gz", ".zst")
MAX_DOCUMENT_BYTES = 2 * 1024**3
"""Refuse to decompress past this: a 1,000-lesson document with large specs is some hundreds of MB,
and a hostile or damaged file must not fill the memory."""


class DocumentFileError(TerminalLoadError):
    """A document file that cannot be read back into JSON bytes (named, with the reason)."""


@dataclass(frozen=True, slots=True)
class DocumentFormat:
    """What was done to a document's bytes: `compression` is "", ".gz" or ".zst"."""

    compression: str
    encrypted: bool

    @property
    def suffix(self) -> str:
        """The file name's ending after `.json` (e.g. ".gz.enc")."""
        return self.compression + (ENCRYPTED_SUFFIX if self.encrypted else "")


def fernet_key(configured: SecretStr | None) -> bytes | None:
    """The key of encrypted documents as Fernet takes it (`Settings.encryption_key`), or None."""
    return configured.get_secret_value().encode() if configured is not None else None


def document_format(name: str) -> DocumentFormat | None:
    """The format a file name announces, or None when it is not a document's name."""
    encrypted = name.endswith(ENCRYPTED_SUFFIX)
    stem = name.removesuffix(ENCRYPTED_SUFFIX) if encrypted else name
    for compression in (".gz", ".zst", ""):
        if stem.endswith(".json" + compression) and len(stem) > len(".json" + compression):
            return DocumentFormat(compression, encrypted)
    return None


def decode_document_bytes(
    data: bytes, fmt: DocumentFormat, *, key: bytes | None, name: str
) -> bytes:
    """The JSON bytes inside `data` (a file's whole content, in format `fmt`): decrypted with the
    Fernet `key` if encrypted, then decompressed. `name` is used in error messages only."""
    if fmt.encrypted:
        data = _decrypt(data, key, name)
    if fmt.compression == ".gz":
        return _gunzip(data, name)
    if fmt.compression == ".zst":
        return _unzstd(data, name)
    return data


def read_document_file(path: Path, *, key: bytes | None) -> bytes:
    """The JSON bytes of the document file at `path` (see the module docstring for formats)."""
    fmt = document_format(path.name)
    if fmt is None:
        raise DocumentFileError(
            f"{path}: not a document file name (expected .json, .json.gz or .json.zst, "
            f"optionally followed by {ENCRYPTED_SUFFIX})"
        )
    return decode_document_bytes(read_file(path), fmt, key=key, name=str(path))


def read_file(path: Path) -> bytes:
    """The bytes of `path`, or a `DocumentFileError` naming it and the reason."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DocumentFileError(f"{path}: cannot be read ({exc.strerror or 'error'})") from None


_ZSTD_STEP = 4096
"""Compressed bytes fed per step: small, so the size cap is checked before a step's output can
grow past it by much (Zstandard can expand a few KB into hundreds of MB)."""


def _unzstd(data: bytes, name: str) -> bytes:
    """Every frame of `data`, decompressed; a frame cut short is an error (a stream reader would
    return the part it got, silently)."""
    decompressor = zstandard.ZstdDecompressor()
    output = _Output(name)
    remaining = data
    try:
        while remaining:
            frame = decompressor.decompressobj()
            start = 0
            while start < len(remaining) and not frame.eof:
                output.add(frame.decompress(remaining[start : start + _ZSTD_STEP]))
                start += _ZSTD_STEP
            if not frame.eof:
                raise DocumentFileError(f"{name}: is not valid Zstandard data (truncated)")
            remaining = frame.unused_data + remaining[start:]
    except zstandard.ZstdError:
        raise DocumentFileError(f"{name}: is not valid Zstandard data (damaged)") from None
    return output.join()


class _Output:
    """Decompressed pieces, refused past MAX_DOCUMENT_BYTES."""

    __slots__ = ("name", "pieces", "total")

    def __init__(self, name: str) -> None:
        self.name = name
        self.pieces: list[bytes] = []
        self.total = 0

    def add(self, piece: bytes) -> None:
        self.total += len(piece)
        if self.total > MAX_DOCUMENT_BYTES:
            raise DocumentFileError(
                f"{self.name}: decompresses to more than {MAX_DOCUMENT_BYTES} bytes; refused"
            )
        self.pieces.append(piece)

    def join(self) -> bytes:
        return b"".join(self.pieces)


def _decrypt(data: bytes, key: bytes | None, name: str) -> bytes:
    if key is None:
        raise DocumentFileError(
            f"{name}: is encrypted and no key is configured (set LEARNER_EXPORT_ENCRYPTION_KEY)"
        )
    try:
        fernet = Fernet(key)
    except ValueError:
        raise DocumentFileError(
            "LEARNER_EXPORT_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes)"
        ) from None
    try:
        return fernet.decrypt(data)
    except InvalidToken:
        raise DocumentFileError(
            f"{name}: cannot be decrypted: wrong key, or the file is damaged"
        ) from None


def _gunzip(data: bytes, name: str) -> bytes:
    output = _Output(name)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while piece := stream.read(1024 * 1024):
                output.add(piece)
    except (OSError, EOFError, zlib.error):
        raise DocumentFileError(f"{name}: is not valid gzip data (damaged or truncated)") from None
    return output.join()
