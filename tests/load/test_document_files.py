"""`load.document_files`: every way a document is stored on disk reads back to the same bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard
from cryptography.fernet import Fernet

from load import document_files
from load.document_files import (
    DocumentFileError,
    DocumentFormat,
    document_format,
    read_document_file,
)
from tests.load.restore_helpers import encode_file

DOCUMENT = b'{"learner":{"id":3}}'


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("learner-data-3-2024-01-15.json", DocumentFormat("", encrypted=False)),
        ("learner-data-3-2024-01-15.json.gz", DocumentFormat(".gz", encrypted=False)),
        ("learner-data-3-2024-01-15.json.zst", DocumentFormat(".zst", encrypted=False)),
        ("learner-data-3-2024-01-15.json.enc", DocumentFormat("", encrypted=True)),
        ("learner-data-3-2024-01-15.json.gz.enc", DocumentFormat(".gz", encrypted=True)),
        ("learner-data.json", DocumentFormat("", encrypted=False)),
        ("learner-data-3.json.bz2", None),
        ("notes.txt", None),
        (".json", None),
    ],
)
def test_the_name_says_the_format(name: str, expected: DocumentFormat | None) -> None:
    assert document_format(name) == expected
    if expected is not None:
        assert name.endswith(".json" + expected.suffix)


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst", ".enc", ".gz.enc", ".zst.enc"])
def test_every_format_reads_back_to_the_document_bytes(tmp_path: Path, suffix: str) -> None:
    key = Fernet.generate_key()
    path = tmp_path / f"learner-data-3-2024-01-15.json{suffix}"
    path.write_bytes(encode_file(DOCUMENT, suffix, key))

    assert read_document_file(path, key=key) == DOCUMENT


def test_a_wrong_key_a_missing_key_and_a_malformed_key_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "learner-data-3-2024-01-15.json.enc"
    path.write_bytes(encode_file(DOCUMENT, ".enc", Fernet.generate_key()))

    with pytest.raises(DocumentFileError, match="cannot be decrypted: wrong key"):
        read_document_file(path, key=Fernet.generate_key())
    with pytest.raises(DocumentFileError, match="no key is configured"):
        read_document_file(path, key=None)
    with pytest.raises(DocumentFileError, match="not a Fernet key"):
        read_document_file(path, key=b"too short")


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_damaged_compressed_data_is_an_error_naming_the_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"learner-data-3-2024-01-15.json{suffix}"
    path.write_bytes(encode_file(DOCUMENT * 100, suffix)[:-8])

    with pytest.raises(DocumentFileError, match=f"{path.name}: is not valid"):
        read_document_file(path, key=None)


def test_decompression_stops_at_the_size_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(document_files, "MAX_DOCUMENT_BYTES", 1024)
    path = tmp_path / "learner-data-3-2024-01-15.json.zst"
    path.write_bytes(encode_file(b" " * 10 * 1024 * 1024, ".zst"))

    with pytest.raises(DocumentFileError, match="decompresses to more than 1024 bytes"):
        read_document_file(path, key=None)


def test_an_unknown_name_and_a_missing_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DocumentFileError, match="not a document file name"):
        read_document_file(tmp_path / "notes.txt", key=None)
    with pytest.raises(DocumentFileError, match="cannot be read"):
        read_document_file(tmp_path / "learner-data-3-2024-01-15.json", key=None)


def test_every_zstandard_frame_is_read(tmp_path: Path) -> None:
    path = tmp_path / "learner-data-3-2024-01-15.json.zst"
    compressor = zstandard.ZstdCompressor()
    path.write_bytes(compressor.compress(DOCUMENT[:7]) + compressor.compress(DOCUMENT[7:]))

    assert read_document_file(path, key=None) == DOCUMENT
