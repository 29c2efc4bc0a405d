"""Hostile input, table-driven: every case against a real server on SQLite and on PostgreSQL.

Each case names who asks (a token recipe), what they send (query string as sent on the wire,
extra headers) and the exact status and `{"error": ...}` body the contract prescribes. None may
produce a 500, a stack trace, or an error body that echoes the input.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pytest

from tests.serve.conftest import WRONG_SECRET, LiveServer, make_token

UNAUTHORIZED = {"error": "Unauthorized"}
FORBIDDEN = {"error": "Forbidden"}
REQUIRED = {"error": "learnerId is required"}
REPEATED = {"error": "learnerId must be given only once"}
MALFORMED = {
    "error": "learnerId must be a positive whole number in plain ASCII digits, without sign, "
    "spaces or leading zeros"
}
OUT_OF_RANGE = {"error": "learnerId is out of range (1 to 2147483647)"}
NOT_FOUND = {"error": "Learner not found"}

Token = Callable[[LiveServer], str | None]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: bytes, payload: bytes, secret: str | None = None) -> str:
    """A token from raw JSON text, signed HS256 with `secret` (unsigned when None)."""
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def as_user(who: str, role: str | None = None, **claims: object) -> Token:
    """A valid platform token for the demo user `who` (an attribute of DemoIds)."""

    def token(live: LiveServer) -> str:
        user_id = getattr(live.ids, who)
        return live.token(user_id, role or "ADMIN", **claims)

    return token


def fixed(text: str | None) -> Token:
    return lambda live: text


def raw(payload: bytes, header: bytes = b'{"alg":"HS256","typ":"JWT"}') -> Token:
    return lambda live: raw_token(header, payload, live.settings.jwt_secret.get_secret_value())  # type: ignore[union-attr]


ADMIN = as_user("admin", "ADMIN")
PARENT = as_user("parent", "PARENT")
FAR = 4_102_444_800  # 2100-01-01


@dataclass(frozen=True)
class Case:
    name: str
    token: Token
    query: str  # as sent; `{child}` etc. are replaced by DemoIds
    status: int
    body: dict[str, str] | None  # None: a document
    headers: dict[str, str] = field(default_factory=dict)
    cookie: Token | None = None


def _hs(alg: str) -> Token:
    return lambda live: make_token(userId=str(live.ids.admin), role="ADMIN", algorithm=alg)


CASES = [
    # --- 401: who is asking --------------------------------------------------------------
    Case("no credentials", fixed(None), "learnerId={child}", 401, UNAUTHORIZED),
    Case(
        "bearer without a token",
        fixed(None),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
        headers={"Authorization": "Bearer"},
    ),
    Case(
        "two tokens in one header",
        fixed(None),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
        headers={"Authorization": "Bearer {admin_token} {admin_token}"},
    ),
    Case("garbage token", fixed("not-a-jwt"), "learnerId={child}", 401, UNAUTHORIZED),
    Case("three dots", fixed("a.b.c"), "learnerId={child}", 401, UNAUTHORIZED),
    Case(
        "alg none",
        lambda live: raw_token(b'{"alg":"none","typ":"JWT"}', b'{"userId":"2","exp":%d}' % FAR),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
    ),
    Case("alg HS512", _hs("HS512"), "learnerId={child}", 401, UNAUTHORIZED),
    Case("alg HS384", _hs("HS384"), "learnerId={child}", 401, UNAUTHORIZED),
    Case(
        "RS256 header over an HMAC signature",
        raw(b'{"userId":"2","role":"ADMIN","exp":%d}' % FAR, b'{"alg":"RS256","typ":"JWT"}'),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
    ),
    Case(
        "wrong secret",
        lambda live: make_token(WRONG_SECRET, userId="2", role="ADMIN"),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
    ),
    Case("expired", as_user("admin", expires_in=-10), "learnerId={child}", 401, UNAUTHORIZED),
    Case("without exp", as_user("admin", exp=None), "learnerId={child}", 401, UNAUTHORIZED),
    Case("exp a string", as_user("admin", exp=str(FAR)), "learnerId={child}", 401, UNAUTHORIZED),
    Case("exp true", as_user("admin", exp=True), "learnerId={child}", 401, UNAUTHORIZED),
    Case(
        "exp 1e400 (infinite)",
        raw(b'{"userId":"2","exp":1e400}'),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
    ),
    Case(
        "exp with 5,000 digits",
        raw(b'{"userId":"2","exp":' + b"9" * 5000 + b"}"),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
    ),
    Case("nbf in the future", as_user("admin", nbf=FAR), "learnerId={child}", 401, UNAUTHORIZED),
    Case("nbf a string", as_user("admin", nbf="0"), "learnerId={child}", 401, UNAUTHORIZED),
    Case("iat a list", as_user("admin", iat=[1]), "learnerId={child}", 401, UNAUTHORIZED),
    Case("userId a number", as_user("admin", userId=2), "learnerId={child}", 401, UNAUTHORIZED),
    Case("userId 'abc'", as_user("admin", userId="abc"), "learnerId={child}", 401, UNAUTHORIZED),
    Case("userId '02'", as_user("admin", userId="02"), "learnerId={child}", 401, UNAUTHORIZED),
    Case("userId ' 2'", as_user("admin", userId=" 2"), "learnerId={child}", 401, UNAUTHORIZED),
    Case("userId '２'", as_user("admin", userId="２"), "learnerId={child}", 401, UNAUTHORIZED),
    Case(
        "userId 2^63", as_user("admin", userId=str(2**63)), "learnerId={child}", 401, UNAUTHORIZED
    ),
    Case("without userId", as_user("admin", userId=None), "learnerId={child}", 401, UNAUTHORIZED),
    Case("payload not an object", raw(b'["userId", "2"]'), "learnerId={child}", 401, UNAUTHORIZED),
    Case("payload not JSON", raw(b"\xff\xfe"), "learnerId={child}", 401, UNAUTHORIZED),
    Case(
        "deleted (unknown) user",
        lambda live: live.token(live.ids.missing, "ADMIN"),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
    ),
    Case(
        "token only in the query string",
        fixed(None),
        "learnerId={child}&token={admin_token}",
        401,
        UNAUTHORIZED,
    ),
    Case(
        "Basic scheme",
        fixed(None),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
        headers={"Authorization": "Basic YWRtaW46YWRtaW4="},
    ),
    Case(
        "bad header wins over a good cookie",
        fixed("garbage"),
        "learnerId={child}",
        401,
        UNAUTHORIZED,
        cookie=ADMIN,
    ),
    Case(
        "no credentials and a bad learnerId: 401 first",
        fixed(None),
        "learnerId=abc",
        401,
        UNAUTHORIZED,
    ),
    # --- 403: not a PARENT or ADMIN ---------------------------------------------------------
    Case("a LEARNER", as_user("child", "LEARNER"), "learnerId={child}", 403, FORBIDDEN),
    Case(
        "a LEARNER whose role claim says ADMIN",
        as_user("child", "ADMIN"),
        "learnerId={child}",
        403,
        FORBIDDEN,
    ),
    Case("a LEARNER, bad learnerId: 403 first", as_user("child"), "learnerId=abc", 403, FORBIDDEN),
    # --- 400: learnerId -------------------------------------------------------------------
    Case("learnerId missing", ADMIN, "", 400, REQUIRED),
    Case("learnerId empty", ADMIN, "learnerId=", 400, REQUIRED),
    Case("learnerId wrong case", ADMIN, "learnerid={child}", 400, REQUIRED),
    Case("learnerId as an array", ADMIN, "learnerId[]={child}", 400, REQUIRED),
    Case("learnerId 'abc'", ADMIN, "learnerId=abc", 400, MALFORMED),
    Case("learnerId '-1'", ADMIN, "learnerId=-1", 400, MALFORMED),
    Case("learnerId '0'", ADMIN, "learnerId=0", 400, MALFORMED),
    Case("learnerId '03'", ADMIN, "learnerId=03", 400, MALFORMED),
    Case("learnerId '+3'", ADMIN, "learnerId=%2B3", 400, MALFORMED),
    Case("learnerId '3.0'", ADMIN, "learnerId=3.0", 400, MALFORMED),
    Case("learnerId '3e0'", ADMIN, "learnerId=3e0", 400, MALFORMED),
    Case("learnerId '0x3'", ADMIN, "learnerId=0x3", 400, MALFORMED),
    Case("learnerId ' 3'", ADMIN, "learnerId=%203", 400, MALFORMED),
    Case("learnerId '3 '", ADMIN, "learnerId=3%20", 400, MALFORMED),
    Case("learnerId '3\\n'", ADMIN, "learnerId=3%0A", 400, MALFORMED),
    Case("learnerId NUL", ADMIN, "learnerId=3%00", 400, MALFORMED),
    Case("learnerId SQL", ADMIN, "learnerId=3%3BDROP%20TABLE%20users", 400, MALFORMED),
    Case("learnerId full-width '３'", ADMIN, "learnerId=%EF%BC%93", 400, MALFORMED),
    Case("learnerId Arabic-Indic '٣'", ADMIN, "learnerId=%D9%A3", 400, MALFORMED),
    Case("learnerId invalid UTF-8", ADMIN, "learnerId=%FF", 400, MALFORMED),
    Case("learnerId 2^31", ADMIN, f"learnerId={2**31}", 400, OUT_OF_RANGE),
    Case("learnerId 2^63", ADMIN, f"learnerId={2**63}", 400, OUT_OF_RANGE),
    Case("learnerId 10^100", ADMIN, f"learnerId={10**100}", 400, OUT_OF_RANGE),
    Case("learnerId 10 KB", ADMIN, "learnerId=" + "7" * 10_240, 400, OUT_OF_RANGE),
    Case("learnerId repeated", ADMIN, "learnerId={child}&learnerId={child}", 400, REPEATED),
    Case("learnerId repeated, one empty", ADMIN, "learnerId=&learnerId={child}", 400, REPEATED),
    Case("a PARENT, bad learnerId", PARENT, "learnerId=abc", 400, MALFORMED),
    # --- 403: a parent asking for someone else ----------------------------------------------
    Case("parent: another family's child", PARENT, "learnerId={other_child}", 403, FORBIDDEN),
    Case("parent: an id that does not exist", PARENT, "learnerId={missing}", 403, FORBIDDEN),
    Case("parent: the largest id", PARENT, "learnerId=2147483647", 403, FORBIDDEN),
    Case("parent: a learner without parent", PARENT, "learnerId={orphan}", 403, FORBIDDEN),
    Case("parent: themselves", PARENT, "learnerId={parent}", 403, FORBIDDEN),
    Case("parent: the admin", PARENT, "learnerId={admin}", 403, FORBIDDEN),
    Case(
        "PARENT whose role claim says ADMIN",
        as_user("parent", "ADMIN"),
        "learnerId={other_child}",
        403,
        FORBIDDEN,
    ),
    Case(
        "another family's parent asking for the child",
        as_user("other_parent", "PARENT"),
        "learnerId={child}",
        403,
        FORBIDDEN,
    ),
    # --- 404: an admin asking for a non-learner ----------------------------------------------
    Case("admin: an id that does not exist", ADMIN, "learnerId={missing}", 404, NOT_FOUND),
    Case("admin: the largest id", ADMIN, "learnerId=2147483647", 404, NOT_FOUND),
    Case("admin: a PARENT's id", ADMIN, "learnerId={parent}", 404, NOT_FOUND),
    Case("admin: themselves", ADMIN, "learnerId={admin}", 404, NOT_FOUND),
    # --- 200: the allowed ones, beside the refusals -----------------------------------------
    Case("admin: any learner", ADMIN, "learnerId={other_child}", 200, None),
    Case("admin: a learner without parent", ADMIN, "learnerId={orphan}", 200, None),
    Case("parent: own child", PARENT, "learnerId={child}", 200, None),
    Case("parent: own child, extra parameters ignored", PARENT, "learnerId={child}&x=1", 200, None),
    Case(
        "lower-case bearer scheme",
        fixed(None),
        "learnerId={child}",
        200,
        None,
        headers={"Authorization": "bearer {admin_token}"},
    ),
    Case("token in the cookie", fixed(None), "learnerId={child}", 200, None, cookie=PARENT),
    Case("good header, bad cookie", ADMIN, "learnerId={child}", 200, None, cookie=fixed("x.y.z")),
    Case(
        "exp as a float",
        as_user("admin", exp=float(FAR) + 0.5),
        "learnerId={child}",
        200,
        None,
    ),
]


def _fill(text: str, live: LiveServer) -> str:
    values = {name: str(value) for name, value in vars(live.ids).items()}
    values["admin_token"] = ADMIN(live) or ""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(live: LiveServer, case: Case) -> None:
    headers = {name: _fill(value, live) for name, value in case.headers.items()}
    cookie = case.cookie(live) if case.cookie else None
    response = live.export(
        _fill(case.query, live),
        token=case.token(live),
        headers=headers,
        cookies={"token": cookie} if cookie else None,
    )
    assert response.status_code == case.status, response.text[:200]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    if case.body is None:
        assert orjson.loads(response.content)["learner"]["role"] == "LEARNER"
    else:
        assert orjson.loads(response.content) == case.body
    if case.status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_table_is_large_enough() -> None:
    assert len([c for c in CASES if c.body is not None]) >= 40
