"""A local Prefect API server on 127.0.0.1, for runs with no PREFECT_API_URL configured.

Prefect's app in a subprocess of ours rather than Prefect's implicit temporary server, so that
its database lives under the data dir (not ~/.prefect), it can run the scheduler for
`learner-export schedule` (`--services`), and Prefect's queued logs and events are drained into
it before it stops.

Run as `python -m flows.server --port N [--services]`; `local_server()` starts it, waits until
it answers and stops it on exit. It runs in a session of its own, so the Ctrl-C a terminal sends
to the command's process group does not reach it: the command still needs it to record the
interrupted run and drain Prefect's queues, and stops it after that. It never outlives the
command: its stdin is a pipe from the command, and when that closes (the command exited or was
killed, even by SIGKILL) the server shuts down.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from learner_export.processes import free_port, stop_process

STARTUP_SECONDS = 120


class LocalServer:
    """A Prefect server process on a free port of 127.0.0.1, its database under `home`.

    Starting it only launches the process, so a command can start it first and do its own work
    (imports, checks) while the server comes up, then `wait` for it: that overlap is seconds of
    a short archive's wall time. Without `services` it runs like Prefect's temporary server (no
    scheduler).
    """

    def __init__(
        self, home: Path, *, services: bool = False, env: Mapping[str, str] | None = None
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        self.services = services
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        command = [sys.executable, "-m", "flows.server", "--port", str(port)]
        server_env = {
            **os.environ, **(env or {}), "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "0"
        }  # fmt: skip
        server_env.pop("PREFECT_API_URL", None)
        with (home / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*command, *(["--services"] if services else [])],
                stdin=subprocess.PIPE,  # its lifeline: closed when this process ends, however
                stdout=log,
                stderr=log,
                env=server_env,
                start_new_session=True,  # out of reach of the terminal's Ctrl-C
            )

    def wait(self) -> str:
        """Wait until it answers; its API URL."""
        _wait_healthy(self.url, self.process, self.home)
        return self.url

    def stop(self) -> None:
        stop_process(self.process)
        if self.process.stdin is not None:
            self.process.stdin.close()


@contextlib.contextmanager
def local_server(
    home: Path,
    *,
    services: bool = False,
    env: Mapping[str, str] | None = None,
    started: LocalServer | None = None,
) -> Iterator[str]:
    """A local Prefect server (`started` early by the caller, or started now) for the duration;
    yields its API URL once it answers, and stops it on exit."""
    server = started or LocalServer(home, services=services, env=env)
    try:
        yield server.wait()
    finally:
        server.stop()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], home: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the local Prefect server exited at startup (see {home}/server.log)"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2),  # noqa: S310 (127.0.0.1 only)
        ):
            return
        time.sleep(0.3)
    raise RuntimeError(f"the local Prefect server did not start in time (see {home}/server.log)")


@contextlib.contextmanager
def prefect_api(
    home: Path, *, services: bool = False, started: LocalServer | None = None
) -> Iterator[None]:
    """The Prefect API for the runs inside: PREFECT_API_URL when configured, else a local server
    (its database under `home`; `started` early by the caller, or started now) stopped, after
    Prefect's log and event queues are drained into it, on exit."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    if PREFECT_API_URL.value():
        if started is not None:
            started.stop()  # a server is configured after all: the early one is not needed
        yield
        return
    with (
        local_server(home, services=services, started=started) as url,
        # No "View at" link: the local server has no UI, and it stops with the command.
        temporary_settings(updates={PREFECT_API_URL: url, PREFECT_UI_URL: ""}),
    ):
        try:
            yield
        finally:
            drain_prefect_queues()


def drain_prefect_queues() -> None:
    """Send Prefect's queued logs and events now, while the server still listens."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--services", action="store_true", help="run the scheduler and others")
    args = parser.parse_args(argv)
    if not args.services:
        os.environ["PREFECT__SERVER_EPHEMERAL"] = "1"
    os.environ["PREFECT__SERVER_FINAL"] = "1"
    _stop_when_parent_goes()
    import uvicorn
    from prefect.server.api.server import create_app

    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="error", lifespan="on")


def _stop_when_parent_goes() -> None:
    """Shut the server down (SIGTERM to itself: uvicorn's graceful stop) once stdin reaches its
    end, which happens when the command that started it has exited, whatever killed it."""

    def watch() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    main()
