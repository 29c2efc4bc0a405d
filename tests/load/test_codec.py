"""`load.codec`: every way a document is stored reads back to the same bytes, and nothing that
is not a document (a damaged file, a decompression bomb) is inflated without limit."""

from __future__ import annotations

import gzip

import pytest
import zstandard
from cryptography.fernet import Fernet

from load import codec
from load.codec import (
    DocumentFormat,
    StoredDocumentError,
    decode_stored,
    document_format,
    encode_stored,
    fernet_from_key,
    inflation_limit,
    plain_name,
    stored_suffix,
)
from load.errors import TerminalLoadError
from tests.factories import zstd_bomb

DOCUMENT = b'{"learner":{"id":3},"lessons":[]}' * 50
NAME = "learner-data-3-2024-01-15.json"


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_round_trip(compression: codec.Compression | None, encrypted: bool) -> None:
    fernet = Fernet(Fernet.generate_key()) if encrypted else None
    name = NAME + stored_suffix(compression, encrypted=encrypted)
    stored = encode_stored(DOCUMENT, compression, fernet)
    assert decode_stored(name, stored, fernet) == DOCUMENT
    assert plain_name(name) == NAME
    assert document_format(name) == DocumentFormat(compression, encrypted)
    if compression or encrypted:
        assert stored != DOCUMENT


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("learner-data-3-2024-01-15.json", DocumentFormat(None, encrypted=False)),
        ("learner-data-3-2024-01-15.json.gz", DocumentFormat("gzip", encrypted=False)),
        ("learner-data-3-2024-01-15.json.zst", DocumentFormat("zstd", encrypted=False)),
        ("learner-data-3-2024-01-15.json.enc", DocumentFormat(None, encrypted=True)),
        ("learner-data-3-2024-01-15.json.gz.enc", DocumentFormat("gzip", encrypted=True)),
        ("learner-data.json", DocumentFormat(None, encrypted=False)),
        ("learner-data-3.json.bz2", None),
        ("notes.txt", None),
        ("part-00000.parquet", None),
        (".json", None),
    ],
)
def test_the_name_says_the_format(name: str, expected: DocumentFormat | None) -> None:
    assert document_format(name) == expected
    if expected is not None:
        assert name.endswith(".json" + expected.suffix)


def test_suffixes_in_the_order_applied() -> None:
    assert stored_suffix("gzip", encrypted=True) == ".gz.enc"
    assert stored_suffix("zstd", encrypted=False) == ".zst"
    assert stored_suffix(None, encrypted=False) == ""


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compression_is_deterministic(compression: codec.Compression) -> None:
    assert encode_stored(DOCUMENT, compression, None) == encode_stored(DOCUMENT, compression, None)


def test_wrong_key_or_altered_token_is_a_one_line_error() -> None:
    stored = encode_stored(DOCUMENT, None, Fernet(Fernet.generate_key()))
    with pytest.raises(StoredDocumentError, match=r"x\.json\.enc: cannot be decrypted"):
        decode_stored("x.json.enc", stored, Fernet(Fernet.generate_key()))
    with pytest.raises(StoredDocumentError, match="no encryption key is configured"):
        decode_stored("x.json.enc", stored, None)


@pytest.mark.parametrize("key", ["not-a-key-but-secret", b"too short", "ключ"])
def test_a_key_that_is_not_a_fernet_key_is_refused_without_quoting_it(key: str | bytes) -> None:
    with pytest.raises(TerminalLoadError, match="is not a Fernet key") as caught:
        fernet_from_key(key)
    assert str(key) not in str(caught.value)


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_damaged_or_truncated_compressed_data_names_the_file(suffix: str) -> None:
    compression: codec.Compression = "gzip" if suffix == ".gz" else "zstd"
    stored = encode_stored(DOCUMENT * 100, compression)
    for damaged in (b"not compressed", stored[:-8]):
        with pytest.raises(StoredDocumentError, match=rf"x\.json{suffix}: is not valid"):
            decode_stored(f"x.json{suffix}", damaged)


def test_every_zstandard_frame_is_read() -> None:
    compressor = zstandard.ZstdCompressor()
    stored = compressor.compress(DOCUMENT[:7]) + compressor.compress(DOCUMENT[7:])
    assert decode_stored("x.json.zst", stored) == DOCUMENT


def test_the_inflation_limit_grows_with_the_stored_size_up_to_the_cap() -> None:
    assert inflation_limit(10) == codec.EXPANSION_FLOOR
    assert inflation_limit(1_000_000) == codec.MAX_EXPANSION * 1_000_000
    assert inflation_limit(10**9) == codec.MAX_DOCUMENT_BYTES


def test_a_zstandard_bomb_is_refused_after_inflating_to_its_limit_only() -> None:
    bomb = zstd_bomb(4 * 1024**3)  # ~128 KB that would inflate to 4 GiB
    assert len(bomb) < 200_000

    with pytest.raises(StoredDocumentError, match=r"x\.json\.zst: decompresses to more than"):
        decode_stored("x.json.zst", bomb)


def test_a_gzip_bomb_is_refused_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # gzip cannot expand past ~1,032x, so only the floor can stop a small one: lower it.
    monkeypatch.setattr(codec, "EXPANSION_FLOOR", 1024 * 1024)
    member = gzip.compress(bytes(16 * 1024 * 1024), mtime=0)
    bomb = member * 8  # a multi-member gzip file: 128 MiB of zeros

    with pytest.raises(StoredDocumentError, match=r"x\.json\.gz: decompresses to more than"):
        decode_stored("x.json.gz", bomb)


def test_a_document_that_compresses_well_is_still_read() -> None:
    regular = b'{"learner":{"id":3},"lessons":[' + b'{"spec":null},' * 500_000 + b"{}]}"
    for compression in ("gzip", "zstd"):
        stored = encode_stored(regular, compression)
        assert decode_stored(f"x.json{stored_suffix(compression, encrypted=False)}", stored) == (
            regular
        )
