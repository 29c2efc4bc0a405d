"""Child processes on this machine: a free loopback port for one, and stopping one for good.

Used by the local Prefect server (`flows.server`), the test suite's servers and the benchmarks, so
that each of these is written once.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any

STOP_SECONDS = 20.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (the OS picks it; another process may
    still take it before the caller binds it, so callers start their server at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], *, timeout: float = STOP_SECONDS) -> int:
    """Ask `process` to stop (SIGTERM), wait up to `timeout` seconds, then kill it (SIGKILL) and
    reap it; returns its exit status. Safe to call on a process that has already exited."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
