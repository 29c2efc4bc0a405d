"""Keyed pseudonyms: how the analyst tables name a learner without saying who it is.

`pseudonym(learner_id, key)` is HMAC-SHA256 keyed with the deployment's pseudonym key over the
learner id written in decimal ASCII digits (learner 3 → the message `b"3"`), as lowercase hex, of
which the first PSEUDONYM_HEX_CHARS characters are kept. The same id and key give the same
pseudonym in every snapshot, so analysts can follow a learner over time; without the key nobody
can go from a pseudonym back to an id (or from an id to a pseudonym), though ids are small
integers. Whoever holds the key can: that is how support answers a request about one learner.
"""

from __future__ import annotations

import hashlib
import hmac

PSEUDONYM_HEX_CHARS = 32
"""128 bits of the HMAC: collisions are out of reach for any number of learners."""

MIN_KEY_BYTES = 16
"""A shorter key could be found by trying keys against one known learner's pseudonym."""


def check_key(key: bytes) -> None:
    """Raise ValueError unless `key` is long enough to keep pseudonyms unguessable."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the pseudonym key must be at least {MIN_KEY_BYTES} bytes (it is {len(key)})"
        )


def pseudonym(learner_id: int, key: bytes) -> str:
    """The learner's pseudonym under `key`: PSEUDONYM_HEX_CHARS lowercase hex characters."""
    check_key(key)
    digest = hmac.new(key, str(learner_id).encode("ascii"), hashlib.sha256).hexdigest()
    return digest[:PSEUDONYM_HEX_CHARS]


FINGERPRINT_MESSAGE = b"learner-export pseudonym key fingerprint v1"
"""The constant whose keyed hash identifies a key (it is never a learner id, which is digits)."""


def key_fingerprint(key: bytes) -> str:
    """Which key made a snapshot's pseudonyms, without revealing it: HMAC-SHA256 keyed with `key`
    over a constant, the first PSEUDONYM_HEX_CHARS hex characters. Two snapshots with the same
    fingerprint name each learner by the same pseudonym and can be joined on it."""
    check_key(key)
    return hmac.new(key, FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]
