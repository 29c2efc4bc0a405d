"""FastAPI's own OpenTelemetry stays off in the endpoint, even when the process has a tracer
provider: its spans would carry request URLs (learner ids), its logs exception messages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from opentelemetry import trace
    from opentelemetry.trace import NoOpTracer, TracerProvider

    asked = []

    class Recording(TracerProvider):  # a configured provider, as an SDK's would be
        def get_tracer(self, name, *args, **kwargs):
            asked.append(name)
            return NoOpTracer()

    trace.set_tracer_provider(Recording())

    from fastapi import FastAPI
    from learner_export.settings import Settings
    from serve import create_app

    async def status(app, path):
        sent = []
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}
        async def send(message):
            sent.append(message)
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"learnerId=3", "root_path": "", "headers": [],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
        return sent[0]["status"]

    plain = FastAPI()
    plain.get("/ping")(lambda: "pong")
    ours = create_app(Settings(
        DATABASE_URL="sqlite:///unused.sqlite3", JWT_SECRET="s" * 64, data_dir=sys.argv[1]
    ))
    result = {"plain": asyncio.run(status(plain, "/ping"))}
    result["plain_asked"] = len(asked)
    asked.clear()
    result["ours"] = asyncio.run(status(ours, "/nowhere"))
    result["ours_asked"] = len(asked)
    print(json.dumps(result))
    """
)


def test_fastapi_telemetry_is_off_with_a_provider_configured(tmp_path: Path) -> None:
    """A plain FastAPI app asks the configured provider for a tracer (so the test can see it);
    the endpoint's app never does."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "data")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["plain"] == 200 and result["plain_asked"] > 0
    assert result["ours"] == 404 and result["ours_asked"] == 0
