"""The platform's access tokens: HS256 JWTs with the claims `{userId, role, exp}`.

The platform's Node server issues them with `jsonwebtoken` (`jwt.sign({userId: String(id), role},
secret, {expiresIn})`), so `userId` is a decimal string and `exp`/`iat` are integer seconds.
`verify_token` accepts exactly those and tells who the token names; it never says what they may
do (the role claim is ignored: the database is asked on every request).

Every way a token can be wrong raises `InvalidToken`, whose message names the reason but never the
token or a claim's value; nothing else escapes, whatever the bytes given.
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import Any

import jwt
from jwt.types import Options

ALGORITHM = "HS256"
"""The only algorithm accepted: pinned, so `none`, HS384/512 and RS/ES tokens are refused."""

MAX_USER_ID = 2_147_483_647
"""The largest id a PostgreSQL `serial` column can hold."""

_DECIMAL_ID = re.compile(r"[1-9][0-9]{0,9}")
_TIME_CLAIMS = ("exp", "nbf", "iat")

# Signature and algorithm are PyJWT's job; the registered time claims are checked here, because
# PyJWT reads them with int(), which accepts the string "9999999999" that RFC 7519 does not.
_DECODE_OPTIONS: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "require": [],
}


class InvalidToken(Exception):
    """The token cannot be trusted, or names no one; the request is unauthenticated (401)."""


def verify_token(token: str, secret: str, *, now: float | None = None) -> int:
    """The user id a valid token names.

    Valid means: HS256 with `secret`; a JSON-object payload; `exp` present, a finite JSON number,
    and later than `now` (seconds since the epoch, default the clock); `nbf`, if present, a finite
    number not after `now`; `iat`, if present, a finite number; `userId` a canonical decimal
    string (ASCII digits, no sign, space or leading zero) of an id from 1 to MAX_USER_ID.
    Raises `InvalidToken` otherwise.
    """
    claims = _verified_claims(token, secret)
    _check_times(claims, time.time() if now is None else now)
    return _user_id(claims)


class VerifiedTokens:
    """`verify_token` with a memory: a token whose signature and claims were checked once is
    not decoded again while it stays valid (the web client sends the same token with every
    request, and an HS256 check is a third of a typical export's time without a database).

    Keyed by the token's exact text, so only that very token, signed with `secret`, is ever
    found; its time window (`nbf`, `exp`) is checked against the clock on every use, as
    `verify_token` would. Refused tokens are never remembered. At most `size` tokens, the oldest
    forgotten first. Thread-safe: a lookup is one atomic dict read; changes take a lock.
    """

    def __init__(self, secret: str, *, size: int = 1024) -> None:
        self._secret = secret
        self._size = size
        self._known: dict[str, tuple[int, float, float]] = {}
        self._lock = threading.Lock()

    def verify(self, token: str, *, now: float | None = None) -> int:
        """The user id `token` names, exactly as `verify_token(token, secret, now=now)`."""
        moment = time.time() if now is None else now
        known = self._known.get(token)
        if known is not None:
            user_id, not_before, expires = known
            if not_before <= moment < expires:
                return user_id
        claims = _verified_claims(token, self._secret)
        _check_times(claims, moment)
        user_id = _user_id(claims)
        with self._lock:
            if len(self._known) >= self._size:
                del self._known[next(iter(self._known))]
            self._known[token] = (user_id, claims.get("nbf", -math.inf), claims["exp"])
        return user_id


def _verified_claims(token: str, secret: str) -> dict[str, Any]:
    """The payload of a token whose HS256 signature with `secret` is good."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options=_DECODE_OPTIONS
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"rejected by the JWT decoder ({type(exc).__name__})") from None
    except (ValueError, TypeError, OverflowError, RecursionError):
        # Payload JSON the decoder itself could not digest (e.g. a number of 5,000 digits).
        raise InvalidToken("the token's JSON cannot be read") from None
    return claims


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_times(claims: dict[str, Any], now: float) -> None:
    for name in _TIME_CLAIMS:
        if name in claims and not _is_number(claims[name]):
            raise InvalidToken(f"the {name} claim is not a finite number")
    if "exp" not in claims:
        raise InvalidToken("the token has no exp claim")
    if now >= claims["exp"]:  # as jsonwebtoken: expired from the exp second on
        raise InvalidToken("the token has expired")
    if "nbf" in claims and claims["nbf"] > now:
        raise InvalidToken("the token is not valid yet")


def _user_id(claims: dict[str, Any]) -> int:
    user_id = claims.get("userId")
    if not isinstance(user_id, str) or not _DECIMAL_ID.fullmatch(user_id):
        raise InvalidToken("the userId claim is not a decimal id string")
    number = int(user_id)
    if number > MAX_USER_ID:
        raise InvalidToken("the userId claim is out of the id range")
    return number


def issue_token(
    secret: str, user_id: int, role: str, *, lifetime: float, now: float | None = None
) -> str:
    """A token as the platform issues it: `{"userId": "<id>", "role": role, "iat", "exp"}`, HS256.

    For demo mode, tests and the benchmark; the role claim is informational only.
    """
    issued = int(time.time() if now is None else now)
    claims = {"userId": str(user_id), "role": role, "iat": issued, "exp": issued + int(lifetime)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
