"""`learner_export.processes`: a free loopback port, and stopping a child process for good.

Real child processes (this Python, running a few lines), real sockets on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from learner_export.processes import free_port, stop_process


def child(code: str) -> subprocess.Popen[str]:
    """This Python running `code` (use it in a `with`, which closes the pipe); its stdout is a
    pipe, so the test can wait for "ready"."""
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def ready(process: subprocess.Popen[str]) -> None:
    """Wait until `process` says it has set itself up (its signal handlers are in place)."""
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"


IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""

STOPS_ON_SIGTERM = """
import time
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.timeout(60)
def test_a_child_that_ignores_sigterm_is_killed() -> None:
    with child(IGNORES_SIGTERM) as process:
        ready(process)

        status = stop_process(process, timeout=0.2)

        assert status == -signal.SIGKILL
        assert process.returncode == -signal.SIGKILL  # reaped, not left a zombie


@pytest.mark.timeout(60)
def test_a_child_that_heeds_sigterm_is_stopped_by_it() -> None:
    with child(STOPS_ON_SIGTERM) as process:
        ready(process)

        assert stop_process(process) == -signal.SIGTERM


def test_a_child_that_has_already_exited_is_reaped_and_its_status_returned() -> None:
    with child("raise SystemExit(3)") as process:
        # Wait until it has exited, but leave it unreaped: stop_process must find it exited.
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)

        assert stop_process(process) == 3
        assert stop_process(process) == 3  # and again, once reaped: nothing left to signal


def test_the_free_port_can_be_listened_on_at_once() -> None:
    port = free_port()

    with (
        socket.create_server(("127.0.0.1", port)) as server,
        socket.create_connection(("127.0.0.1", port), timeout=10) as client,
    ):
        accepted, _ = server.accept()
        with accepted:
            client.sendall(b"ping")
            assert accepted.recv(4) == b"ping"
