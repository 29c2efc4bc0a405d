"""Token verification: what the platform issues is accepted, anything else is `InvalidToken`,
and no bytes whatever make it raise anything else."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learner_export.tokens import (
    MAX_USER_ID,
    InvalidToken,
    VerifiedTokens,
    issue_token,
    verify_token,
)

SECRET = "s" * 40
NOW = 1_800_000_000.0
"""The clock of every test that gives `now`: fixed claims such as `exp` 1900000000 (2030) are
judged at this moment whatever today's date is."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: bytes, header: bytes = b'{"alg":"HS256","typ":"JWT"}') -> str:
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def test_accepts_a_token_as_the_platform_issues_it() -> None:
    # What jsonwebtoken's sign({userId: "3", role: "PARENT"}, secret, {expiresIn: "7d"}) gives.
    token = signed(b'{"userId":"3","role":"PARENT","iat":1799999000,"exp":1800604800}')
    assert verify_token(token, SECRET, now=NOW) == 3


def test_issue_token_round_trips() -> None:
    token = issue_token(SECRET, 42, "ADMIN", lifetime=60, now=NOW)
    assert verify_token(token, SECRET, now=NOW + 59) == 42
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, SECRET, now=NOW + 60)


def test_the_largest_id_is_accepted_and_the_next_is_not() -> None:
    ok = signed(b'{"userId":"%d","exp":1900000000}' % MAX_USER_ID)
    assert verify_token(ok, SECRET, now=NOW) == MAX_USER_ID
    with pytest.raises(InvalidToken, match="out of the id range"):
        verify_token(
            signed(b'{"userId":"%d","exp":1900000000}' % (MAX_USER_ID + 1)), SECRET, now=NOW
        )


def test_without_now_the_clock_decides() -> None:
    """Relative to the clock only: one token expired a second ago, one valid for an hour."""
    moment = int(time.time())
    assert verify_token(signed(b'{"userId":"3","exp":%d}' % (moment + 3600)), SECRET) == 3
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(signed(b'{"userId":"3","exp":%d}' % (moment - 1)), SECRET)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"userId":"3"}', "no exp"),
        (b'{"userId":"3","exp":"1900000000"}', "exp claim is not a finite number"),
        (b'{"userId":"3","exp":null}', "exp claim is not a finite number"),
        (b'{"userId":"3","exp":false}', "exp claim is not a finite number"),
        (b'{"userId":"3","exp":NaN}', "rejected by the JWT decoder|cannot be read|finite"),
        (b'{"userId":"3","exp":1e999}', "exp claim is not a finite number"),
        (b'{"userId":"3","exp":1900000000,"nbf":"0"}', "nbf claim"),
        (b'{"userId":"3","exp":1900000000,"nbf":1900000000}', "not valid yet"),
        (b'{"userId":"3","exp":1900000000,"iat":{}}', "iat claim"),
        (b'{"userId":3,"exp":1900000000}', "userId"),
        (b'{"userId":"","exp":1900000000}', "userId"),
        (b'{"userId":"0","exp":1900000000}', "userId"),
        (b'{"userId":"3\\n","exp":1900000000}', "userId"),
        (b'{"userId":"\\u0663","exp":1900000000}', "userId"),
        (b'{"exp":1900000000}', "userId"),
        (
            b'{"userId":"3","exp":1' + b"0" * 5000 + b"}",
            "rejected by the JWT decoder|cannot be read",
        ),
        (b"[1,2,3]", "rejected by the JWT decoder"),
    ],
)
def test_refuses_claims_of_the_wrong_type_or_time(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        verify_token(signed(payload), SECRET, now=NOW)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_refuses_other_hmac_algorithms(algorithm: str) -> None:
    token = jwt.encode({"userId": "3", "exp": 1900000000}, "k" * 64, algorithm=algorithm)
    with pytest.raises(InvalidToken, match="InvalidAlgorithmError"):
        verify_token(token, "k" * 64, now=NOW)


def test_refuses_alg_none_and_a_bad_signature() -> None:
    unsigned = jwt.encode({"userId": "3", "exp": 1900000000}, None, algorithm="none")
    with pytest.raises(InvalidToken):
        verify_token(unsigned, SECRET, now=NOW)
    forged = signed(b'{"userId":"3","exp":1900000000}')[:-2] + "AA"
    with pytest.raises(InvalidToken, match="InvalidSignatureError"):
        verify_token(forged, SECRET, now=NOW)


def test_the_message_never_holds_the_token_or_a_claim() -> None:
    token = signed(b'{"userId":"alice@example.com","exp":1900000000}')
    with pytest.raises(InvalidToken) as caught:
        verify_token(token, SECRET, now=NOW)
    assert "alice" not in str(caught.value)
    assert token not in str(caught.value)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


# Background threads of other tests (Prefect's session-wide test server) draw from the global
# `random` while examples are generated; Hypothesis takes that for the strategy's doing.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=300, deadline=None)
@given(
    claims=st.dictionaries(
        st.sampled_from(["userId", "exp", "nbf", "iat", "role", "sub", "aud", "iss", "jti"]),
        _json_values,
    )
)
def test_any_claims_either_verify_or_raise_invalid_token(claims: dict[str, object]) -> None:
    import orjson

    try:
        payload = orjson.dumps(claims, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return
    with contextlib.suppress(InvalidToken):
        verify_token(signed(payload), SECRET, now=NOW)


# Background threads of other tests (Prefect's session-wide test server) draw from the global
# `random` while examples are generated; Hypothesis takes that for the strategy's doing.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_either_verifies_or_raises_invalid_token(text: str) -> None:
    with contextlib.suppress(InvalidToken):
        verify_token(text, SECRET, now=NOW)


# --- VerifiedTokens: verify_token with a memory -------------------------------------------------


def test_a_remembered_token_is_judged_by_the_clock_on_every_use() -> None:
    tokens = VerifiedTokens(SECRET)
    token = signed(b'{"userId":"3","exp":1800000060,"nbf":1799999990}')
    assert tokens.verify(token, now=NOW) == 3
    assert tokens.verify(token, now=NOW + 59) == 3  # remembered
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token, now=NOW + 60)
    with pytest.raises(InvalidToken, match="not valid yet"):
        tokens.verify(token, now=NOW - 11)


def test_only_the_exact_token_is_remembered_and_refusals_never() -> None:
    tokens = VerifiedTokens(SECRET)
    good = signed(b'{"userId":"3","exp":1900000000}')
    assert tokens.verify(good, now=NOW) == 3
    header, _, signature = good.split(".")
    other_payload = _b64(b'{"userId":"4","exp":1900000000}')
    forged = f"{header}.{other_payload}.{signature}"  # another payload under good's signature
    for _ in range(2):  # refused each time: a refusal is not remembered either
        with pytest.raises(InvalidToken, match="decoder"):
            tokens.verify(forged, now=NOW)
    other = VerifiedTokens("t" * 40)  # another secret: the same text is not trusted there
    with pytest.raises(InvalidToken, match="decoder"):
        other.verify(good, now=NOW)


def test_the_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    tokens = VerifiedTokens(SECRET, size=2)
    made = [signed(b'{"userId":"%d","exp":1900000000}' % i) for i in (1, 2, 3)]
    assert [tokens.verify(t, now=NOW) for t in made] == [1, 2, 3]
    assert list(tokens._known) == made[1:]
