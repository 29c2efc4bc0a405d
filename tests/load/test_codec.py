from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from load.codec import decode_stored, encode_stored, fernet_from_key, plain_name, stored_suffix
from load.errors import TerminalLoadError

DOCUMENT = b'{"learner":{"id":3},"lessons":[]}' * 50


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_round_trip(compression: str | None, encrypted: bool) -> None:
    fernet = Fernet(Fernet.generate_key()) if encrypted else None
    name = "learner-data-3-2024-01-15.json" + stored_suffix(compression, encrypted=encrypted)
    stored = encode_stored(DOCUMENT, compression, fernet)
    assert decode_stored(name, stored, fernet) == DOCUMENT
    assert plain_name(name) == "learner-data-3-2024-01-15.json"
    if compression or encrypted:
        assert stored != DOCUMENT


def test_suffixes_in_the_order_applied() -> None:
    assert stored_suffix("gzip", encrypted=True) == ".gz.enc"
    assert stored_suffix("zstd", encrypted=False) == ".zst"
    assert stored_suffix(None, encrypted=False) == ""


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compression_is_deterministic(compression: str) -> None:
    assert encode_stored(DOCUMENT, compression, None) == encode_stored(DOCUMENT, compression, None)


def test_wrong_key_or_altered_token_is_a_one_line_error() -> None:
    stored = encode_stored(DOCUMENT, None, Fernet(Fernet.generate_key()))
    with pytest.raises(TerminalLoadError, match="cannot be decrypted"):
        decode_stored("x.json.enc", stored, Fernet(Fernet.generate_key()))
    with pytest.raises(TerminalLoadError, match="no encryption key"):
        decode_stored("x.json.enc", stored, None)


def test_a_key_that_is_not_a_fernet_key_is_refused_without_quoting_it() -> None:
    with pytest.raises(TerminalLoadError) as caught:
        fernet_from_key("not-a-key-but-secret")
    assert "not-a-key-but-secret" not in str(caught.value)


def test_corrupt_compressed_data_names_the_file() -> None:
    with pytest.raises(TerminalLoadError, match=r"x\.json\.gz"):
        decode_stored("x.json.gz", b"not gzip", None)
