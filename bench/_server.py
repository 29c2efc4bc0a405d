"""The one way the benches start the server: `python serve.py` against a database, on a free
loopback port, until the block ends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner_export.processes import free_port, stop_process  # noqa: E402


@dataclass(frozen=True)
class Started:
    """A running server: its base URL and the process id of `serve.py` (the workers' parent
    when there are several)."""

    url: str
    pid: int


@contextmanager
def serve_py(
    database_url: str,
    *,
    workers: int,
    data_dir: Path,
    secret: str,
    environment: dict[str, str] | None = None,
    root: Path = ROOT,
) -> Iterator[Started]:
    """`python serve.py --workers N` of the tree at `root` (default: this one) on a free
    loopback port, with no practical rate limit and `environment` added to its settings; yields
    once every worker has started."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET": secret,
        "LEARNER_EXPORT_DATA_DIR": str(data_dir),
        "LEARNER_EXPORT_EXPORTS_PER_MINUTE": "100000000",
        **(environment or {}),
    }
    command = [sys.executable, "serve.py", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    stderr = process.stderr
    assert stderr is not None
    try:
        # One worker: listening once "Uvicorn running" is logged. Several: the parent binds and
        # each worker listens after its startup.
        started, bound = 0, False
        while not (bound and started >= workers):
            line = stderr.readline()
            if not line:
                raise SystemExit("the server exited before it started")
            started += "Application startup complete" in line
            bound = bound or "Uvicorn running on" in line
        # The server logs each refused export: keep its pipe from filling.
        threading.Thread(target=lambda: [None for _ in stderr], daemon=True).start()
        yield Started(f"http://127.0.0.1:{port}", process.pid)
    finally:
        stop_process(process)
