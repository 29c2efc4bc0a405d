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


@dataclass(frozen=True)
class Answer:
    """What the contract prescribes: a status and its `{"error": ...}` body (None: a document)."""

    status: int
    body: dict[str, str] | None


def refusal(status: int, error: str) -> Answer:
    return Answer(status, {"error": error})


UNAUTHORIZED = refusal(401, "Unauthorized")
FORBIDDEN = refusal(403, "Forbidden")
REQUIRED = refusal(400, "learnerId is required")
REPEATED = refusal(400, "learnerId must be given only once")
MALFORMED = refusal(
    400,
    "learnerId must be a positive whole number in plain ASCII digits, without sign, spaces or "
    "leading zeros",
)
OUT_OF_RANGE = refusal(400, "learnerId is out of range (1 to 2147483647)")
NOT_FOUND = refusal(404, "Learner not found")
DOCUMENT = Answer(200, None)

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
    answer: Answer
    query: str = "learnerId={child}"  # as sent; `{child}` etc. are replaced by DemoIds
    headers: dict[str, str] = field(default_factory=dict)
    cookie: Token | None = None


def _hs(alg: str) -> Token:
    return lambda live: make_token(userId=str(live.ids.admin), role="ADMIN", algorithm=alg)


CASES = [
    # --- 401: who is asking --------------------------------------------------------------
    Case("no credentials", fixed(None), UNAUTHORIZED),
    Case("bearer without a token", fixed(None), UNAUTHORIZED, headers={"Authorization": "Bearer"}),
    Case(
        "two tokens in one header",
        fixed(None),
        UNAUTHORIZED,
        headers={"Authorization": "Bearer {admin_token} {admin_token}"},
    ),
    Case("garbage token", fixed("not-a-jwt"), UNAUTHORIZED),
    Case("three dots", fixed("a.b.c"), UNAUTHORIZED),
    Case(
        "alg none",
        lambda live: raw_token(b'{"alg":"none","typ":"JWT"}', b'{"userId":"2","exp":%d}' % FAR),
        UNAUTHORIZED,
    ),
    Case("alg HS512", _hs("HS512"), UNAUTHORIZED),
    Case("alg HS384", _hs("HS384"), UNAUTHORIZED),
    Case(
        "RS256 header over an HMAC signature",
        raw(b'{"userId":"2","role":"ADMIN","exp":%d}' % FAR, b'{"alg":"RS256","typ":"JWT"}'),
        UNAUTHORIZED,
    ),
    Case(
        "wrong secret",
        lambda live: make_token(WRONG_SECRET, userId="2", role="ADMIN"),
        UNAUTHORIZED,
    ),
    Case("expired", as_user("admin", expires_in=-10), UNAUTHORIZED),
    Case("without exp", as_user("admin", exp=None), UNAUTHORIZED),
    Case("exp a string", as_user("admin", exp=str(FAR)), UNAUTHORIZED),
    Case("exp true", as_user("admin", exp=True), UNAUTHORIZED),
    Case("exp 1e400 (infinite)", raw(b'{"userId":"2","exp":1e400}'), UNAUTHORIZED),
    Case("exp with 5,000 digits", raw(b'{"userId":"2","exp":' + b"9" * 5000 + b"}"), UNAUTHORIZED),
    Case("nbf in the future", as_user("admin", nbf=FAR), UNAUTHORIZED),
    Case("nbf a string", as_user("admin", nbf="0"), UNAUTHORIZED),
    Case("iat a list", as_user("admin", iat=[1]), UNAUTHORIZED),
    Case("userId a number", as_user("admin", userId=2), UNAUTHORIZED),
    Case("userId 'abc'", as_user("admin", userId="abc"), UNAUTHORIZED),
    Case("userId '02'", as_user("admin", userId="02"), UNAUTHORIZED),
    Case("userId ' 2'", as_user("admin", userId=" 2"), UNAUTHORIZED),
    Case("userId '２'", as_user("admin", userId="２"), UNAUTHORIZED),
    Case("userId 2^63", as_user("admin", userId=str(2**63)), UNAUTHORIZED),
    Case("without userId", as_user("admin", userId=None), UNAUTHORIZED),
    Case("payload not an object", raw(b'["userId", "2"]'), UNAUTHORIZED),
    Case("payload not JSON", raw(b"\xff\xfe"), UNAUTHORIZED),
    Case("deleted (unknown) user", as_user("missing"), UNAUTHORIZED),
    Case(
        "token only in the query string",
        fixed(None),
        UNAUTHORIZED,
        "learnerId={child}&token={admin_token}",
    ),
    Case(
        "Basic scheme",
        fixed(None),
        UNAUTHORIZED,
        headers={"Authorization": "Basic YWRtaW46YWRtaW4="},
    ),
    Case("bad header wins over a good cookie", fixed("garbage"), UNAUTHORIZED, cookie=ADMIN),
    Case(
        "no credentials and a bad learnerId: 401 first", fixed(None), UNAUTHORIZED, "learnerId=abc"
    ),
    # --- 403: not a PARENT or ADMIN ---------------------------------------------------------
    Case("a LEARNER", as_user("child", "LEARNER"), FORBIDDEN),
    Case("a LEARNER whose role claim says ADMIN", as_user("child", "ADMIN"), FORBIDDEN),
    Case("a LEARNER, bad learnerId: 403 first", as_user("child"), FORBIDDEN, "learnerId=abc"),
    # --- 400: learnerId -------------------------------------------------------------------
    Case("learnerId missing", ADMIN, REQUIRED, ""),
    Case("learnerId empty", ADMIN, REQUIRED, "learnerId="),
    Case("learnerId wrong case", ADMIN, REQUIRED, "learnerid={child}"),
    Case("learnerId as an array", ADMIN, REQUIRED, "learnerId[]={child}"),
    Case("learnerId 'abc'", ADMIN, MALFORMED, "learnerId=abc"),
    Case("learnerId '-1'", ADMIN, MALFORMED, "learnerId=-1"),
    Case("learnerId '0'", ADMIN, MALFORMED, "learnerId=0"),
    Case("learnerId '03'", ADMIN, MALFORMED, "learnerId=03"),
    Case("learnerId '+3'", ADMIN, MALFORMED, "learnerId=%2B3"),
    Case("learnerId '3.0'", ADMIN, MALFORMED, "learnerId=3.0"),
    Case("learnerId '3e0'", ADMIN, MALFORMED, "learnerId=3e0"),
    Case("learnerId '0x3'", ADMIN, MALFORMED, "learnerId=0x3"),
    Case("learnerId ' 3'", ADMIN, MALFORMED, "learnerId=%203"),
    Case("learnerId '3 '", ADMIN, MALFORMED, "learnerId=3%20"),
    Case("learnerId '3\\n'", ADMIN, MALFORMED, "learnerId=3%0A"),
    Case("learnerId NUL", ADMIN, MALFORMED, "learnerId=3%00"),
    Case("learnerId SQL", ADMIN, MALFORMED, "learnerId=3%3BDROP%20TABLE%20users"),
    Case("learnerId full-width '３'", ADMIN, MALFORMED, "learnerId=%EF%BC%93"),
    Case("learnerId Arabic-Indic '٣'", ADMIN, MALFORMED, "learnerId=%D9%A3"),
    Case("learnerId invalid UTF-8", ADMIN, MALFORMED, "learnerId=%FF"),
    Case("learnerId 2^31", ADMIN, OUT_OF_RANGE, f"learnerId={2**31}"),
    Case("learnerId 2^63", ADMIN, OUT_OF_RANGE, f"learnerId={2**63}"),
    Case("learnerId 10^100", ADMIN, OUT_OF_RANGE, f"learnerId={10**100}"),
    Case("learnerId 10 KB", ADMIN, OUT_OF_RANGE, "learnerId=" + "7" * 10_240),
    Case("learnerId repeated", ADMIN, REPEATED, "learnerId={child}&learnerId={child}"),
    Case("learnerId repeated, one empty", ADMIN, REPEATED, "learnerId=&learnerId={child}"),
    Case("a PARENT, bad learnerId", PARENT, MALFORMED, "learnerId=abc"),
    # --- 403: a parent asking for someone else ----------------------------------------------
    Case("parent: another family's child", PARENT, FORBIDDEN, "learnerId={other_child}"),
    Case("parent: an id that does not exist", PARENT, FORBIDDEN, "learnerId={missing}"),
    Case("parent: the largest id", PARENT, FORBIDDEN, "learnerId=2147483647"),
    Case("parent: a learner without parent", PARENT, FORBIDDEN, "learnerId={orphan}"),
    Case("parent: themselves", PARENT, FORBIDDEN, "learnerId={parent}"),
    Case("parent: the admin", PARENT, FORBIDDEN, "learnerId={admin}"),
    Case(
        "PARENT whose role claim says ADMIN",
        as_user("parent", "ADMIN"),
        FORBIDDEN,
        "learnerId={other_child}",
    ),
    Case("another family's parent: the child", as_user("other_parent", "PARENT"), FORBIDDEN),
    # --- 404: an admin asking for a non-learner ----------------------------------------------
    Case("admin: an id that does not exist", ADMIN, NOT_FOUND, "learnerId={missing}"),
    Case("admin: the largest id", ADMIN, NOT_FOUND, "learnerId=2147483647"),
    Case("admin: a PARENT's id", ADMIN, NOT_FOUND, "learnerId={parent}"),
    Case("admin: themselves", ADMIN, NOT_FOUND, "learnerId={admin}"),
    # --- 200: the allowed ones, beside the refusals -----------------------------------------
    Case("admin: any learner", ADMIN, DOCUMENT, "learnerId={other_child}"),
    Case("admin: a learner without parent", ADMIN, DOCUMENT, "learnerId={orphan}"),
    Case("parent: own child", PARENT, DOCUMENT),
    Case("parent: own child, extra parameters ignored", PARENT, DOCUMENT, "learnerId={child}&x=1"),
    Case(
        "lower-case bearer scheme",
        fixed(None),
        DOCUMENT,
        headers={"Authorization": "bearer {admin_token}"},
    ),
    Case("token in the cookie", fixed(None), DOCUMENT, cookie=PARENT),
    Case("good header, bad cookie", ADMIN, DOCUMENT, cookie=fixed("x.y.z")),
    Case("exp as a float", as_user("admin", exp=float(FAR) + 0.5), DOCUMENT),
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
    assert response.status_code == case.answer.status, response.text[:200]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    if case.answer.body is None:
        assert orjson.loads(response.content)["learner"]["role"] == "LEARNER"
    else:
        assert orjson.loads(response.content) == case.answer.body
    if case.answer.status == 401:
        assert response.headers["www-authenticate"] == "Bearer"


def test_the_table_is_large_enough() -> None:
    assert len([c for c in CASES if c.answer.body is not None]) >= 40
