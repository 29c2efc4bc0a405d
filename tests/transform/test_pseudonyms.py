"""transform/pseudonyms.py: keyed, stable, unguessable learner pseudonyms."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from tests.analyst import KEY, OTHER_KEY
from transform.pseudonyms import (
    FINGERPRINT_MESSAGE,
    MIN_KEY_BYTES,
    PSEUDONYM_HEX_CHARS,
    key_fingerprint,
    pseudonym,
)


def test_a_pseudonym_is_the_truncated_hex_hmac_of_the_decimal_id() -> None:
    expected = hmac.new(KEY, b"3", hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]
    assert pseudonym(3, KEY) == expected
    assert len(expected) == 32


def test_pseudonyms_depend_on_the_id_and_the_key() -> None:
    assert pseudonym(3, KEY) == pseudonym(3, KEY)
    assert pseudonym(3, KEY) != pseudonym(3, OTHER_KEY)
    assert len({pseudonym(i, KEY) for i in range(1, 10_001)}) == 10_000


@pytest.mark.parametrize("key", [b"", b"x" * (MIN_KEY_BYTES - 1)])
def test_a_short_key_is_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        pseudonym(3, key)


def test_the_key_fingerprint_is_a_keyed_hash_of_a_constant_never_the_key() -> None:
    key = b"tests-only pseudonym key 32bytes"
    fingerprint = key_fingerprint(key)
    assert fingerprint == key_fingerprint(key)
    assert fingerprint == hmac.new(key, FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:32]
    assert fingerprint != key_fingerprint(b"another tests-only pseudonym key")
    assert key.hex() not in fingerprint and fingerprint not in key.hex()
    assert fingerprint not in {pseudonym(i, key) for i in range(1, 1000)}
