"""How a document's bytes are stored at rest: optional compression, then optional encryption.

Order is fixed: compress first (encrypted bytes do not compress), then encrypt. The name's
suffixes say what was applied, in the same order: `.json`, `.json.gz`, `.json.zst`,
`.json.gz.enc` ... Compression is deterministic (gzip without a timestamp), so the same document
gives the same stored bytes; Fernet tokens carry a random IV and a timestamp, so encrypted bytes
differ from run to run while decrypting to the same document.
"""

from __future__ import annotations

import gzip
from typing import Literal

import zstandard
from cryptography.fernet import Fernet, InvalidToken

from load.errors import TerminalLoadError

Compression = Literal["gzip", "zstd"]

COMPRESSION_SUFFIXES: dict[str, str] = {"gzip": ".gz", "zstd": ".zst"}
ENCRYPTION_SUFFIX = ".enc"
ZSTD_LEVEL = 10


def stored_suffix(compression: Compression | None, *, encrypted: bool) -> str:
    """What follows `.json` in a stored document's name."""
    suffix = COMPRESSION_SUFFIXES[compression] if compression else ""
    return suffix + (ENCRYPTION_SUFFIX if encrypted else "")


def fernet_from_key(key: str) -> Fernet:
    """A Fernet for `key` (url-safe base64 of 32 bytes); a one-line error naming no key bytes."""
    try:
        return Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise TerminalLoadError(
            "the configured encryption key is not a Fernet key (32 url-safe base64-encoded bytes; "
            "make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        ) from None


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

    Raises TerminalLoadError (naming the file, never its content) when the file is encrypted and
    no key is given, the key is wrong or the token was altered, or the compressed data is corrupt.
    """
    if name.endswith(ENCRYPTION_SUFFIX):
        if fernet is None:
            raise TerminalLoadError(f"{name} is encrypted and no encryption key is configured")
        try:
            data = fernet.decrypt(data)
        except InvalidToken:
            raise TerminalLoadError(
                f"{name} cannot be decrypted: wrong key, or the file was altered"
            ) from None
        name = name.removesuffix(ENCRYPTION_SUFFIX)
    try:
        if name.endswith(COMPRESSION_SUFFIXES["gzip"]):
            return gzip.decompress(data)
        if name.endswith(COMPRESSION_SUFFIXES["zstd"]):
            return zstandard.ZstdDecompressor().decompress(data)
    except (OSError, EOFError, zstandard.ZstdError):
        raise TerminalLoadError(f"{name} is not valid compressed data") from None
    return data


def plain_name(name: str) -> str:
    """The `.json` name a stored file decodes to (its compression and encryption suffixes off)."""
    name = name.removesuffix(ENCRYPTION_SUFFIX)
    for suffix in COMPRESSION_SUFFIXES.values():
        name = name.removesuffix(suffix)
    return name
