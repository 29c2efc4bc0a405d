"""Fixtures for the HTTP endpoint: a real uvicorn server on a free loopback port, per demo source.

Servers run in a thread of the test process (real sockets, real HTTP/1.1 parsing by uvicorn) and
are started once per source and settings, then reused; `live` hands a test the server for the
`demo_source` it runs on (SQLite, then PostgreSQL through the read-only role).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa
import uvicorn

from learner_export.settings import Settings
from serve import create_app, server_config
from tests.conftest import DemoSource

# 64 bytes: PyJWT warns below 32 for HS256 and below 64 for the HS512 tokens the tests forge.
SECRET = "test-secret-of-the-platform-" + "0123456789abcdef" * 2 + "01234567"
WRONG_SECRET = "another-secret-not-platform-" + "fedcba9876543210" * 2 + "76543210"


@dataclass(frozen=True)
class DemoIds:
    """Ids of the demo database's cast, found from its rows (not hard-coded beyond the layout)."""

    parent: int  # user 1
    admin: int  # user 2
    child: int  # learner 3, child of the parent
    big: int  # learner 4: 1,050 lessons
    other_child: int  # a learner of another family
    other_parent: int  # a parent of another family
    orphan: int  # a learner without a parent on record
    missing: int  # an id no user has


def demo_ids(source: DemoSource) -> DemoIds:
    users = source.rows.users
    learners = [u for u in users if u["role"] == "LEARNER"]
    return DemoIds(
        parent=1,
        admin=2,
        child=3,
        big=4,
        other_child=next(u["id"] for u in learners if u["parent_id"] not in (None, 1)),
        other_parent=next(u["id"] for u in users if u["role"] == "PARENT" and u["id"] != 1),
        orphan=next(u["id"] for u in learners if u["parent_id"] is None),
        missing=max(u["id"] for u in users) + 1000,
    )


def make_token(
    secret: str = SECRET,
    *,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    expires_in: float = 3600,
    **claims: Any,
) -> str:
    """A token like the platform's, with any claim overridden (None removes it)."""
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + int(expires_in)}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


@dataclass
class LiveServer:
    """A running server: `url` is its base URL, `settings` what it was started with."""

    url: str
    settings: Settings
    source: DemoSource
    ids: DemoIds
    server: uvicorn.Server
    thread: threading.Thread
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def token(self, user_id: int, role: str = "ADMIN", **claims: Any) -> str:
        """A platform token for `user_id`; `claims` override any claim (None removes it)."""
        return make_token(**{"userId": str(user_id), "role": role, **claims})

    def export(
        self,
        query: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> httpx.Response:
        """GET /api/export?{query}; `query` is sent as written (already percent-encoded)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        path = "/api/export" + (f"?{query}" if query else "")
        return self.client.get(path, headers=sent)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(settings: Settings, source: DemoSource) -> LiveServer:
    """Start uvicorn on 127.0.0.1 with an ephemeral port; return once it accepts connections."""
    config = server_config(
        create_app(settings),
        settings,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return LiveServer(
        f"http://127.0.0.1:{port}", settings, source, demo_ids(source), server, thread
    )


class ServerPool:
    """Servers started on demand, one per (source, limit), all stopped at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.servers: dict[tuple[str, int], LiveServer] = {}

    def get(self, source: DemoSource, *, exports_per_minute: int = 1_000_000) -> LiveServer:
        key = (source.url, exports_per_minute)
        if key not in self.servers:
            data_dir = self.base / f"server-{len(self.servers)}"
            settings = Settings(
                DATABASE_URL=source.url,
                JWT_SECRET=SECRET,
                data_dir=data_dir,
                exports_per_minute=exports_per_minute,
            )
            self.servers[key] = start_server(settings, source)
        return self.servers[key]

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory.mktemp("servers"))
    yield pool
    pool.stop()


@pytest.fixture
def live(server_pool: ServerPool, demo_source: DemoSource) -> LiveServer:
    """The server reading `demo_source` (SQLite, then PostgreSQL), with no practical rate limit."""
    return server_pool.get(demo_source)


def selected_tables(engine: sa.Engine) -> list[str]:
    """The table of every SELECT `engine` runs from now on through SQLAlchemy (its first
    FROM), appended as run; for an asyncio engine, pass its `sync_engine`."""
    tables: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            tables.append(re.findall(r"\bFROM\s+(\w+)", statement)[0])

    sa.event.listen(engine, "before_cursor_execute", record)
    return tables
