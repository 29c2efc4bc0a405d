"""Chunk tasks on a Dask cluster: the task runner for a scheduler's address, and the checks that
refuse a run in one line before it starts (a malformed address, no scheduler answering, the
`dask` extra not installed) instead of failing mid-run with Dask's own traceback."""

from __future__ import annotations

import asyncio
from typing import Any

from flows.errors import OptionUnavailable

DASK_CONNECT_SECONDS = 10
"""How long the scheduler has to answer before the run is refused (one on the network answers in
well under a second; Dask itself would wait 30 s, then fail mid-run)."""

MISSING_EXTRA = "--dask-address needs the dask extra: pip install 'learner-export[dask]'"


def check_address(address: str) -> None:
    """Refuse an address that is not a Dask scheduler address (no port, an unknown scheme),
    without connecting: a deployment is registered from a machine that may not reach the
    cluster."""
    try:
        from distributed.comm.addressing import parse_address
        from distributed.comm.registry import get_backend
    except ImportError:
        raise OptionUnavailable(MISSING_EXTRA) from None
    try:
        scheme, location = parse_address(address)  # no scheme: tcp, as Dask reads it
        backend = get_backend(scheme)  # a known scheme
        backend.get_address_host_port(location)  # type: ignore[no-untyped-call]  # a port
    except (ValueError, NotImplementedError) as exc:  # NotImplementedError: inproc:// (no host)
        reason = str(exc) or f"no host and port in {scheme}://"
        raise OptionUnavailable(
            f"--dask-address {address}: not a Dask scheduler address ({reason})"
        ) from None


def check_scheduler(address: str) -> None:
    """Refuse the run unless a Dask scheduler answers at `address` within DASK_CONNECT_SECONDS."""
    check_address(address)
    from distributed.comm.core import connect

    async def handshake() -> None:
        comm = await connect(address, timeout=DASK_CONNECT_SECONDS)  # type: ignore[no-untyped-call]
        await comm.close()

    try:
        # Bounded as a whole: a listener that is not Dask accepts and then never answers.
        asyncio.run(asyncio.wait_for(handshake(), DASK_CONNECT_SECONDS))
    except ValueError as exc:  # an address Dask's connect refuses: Dask says why
        raise OptionUnavailable(
            f"--dask-address {address}: not a Dask scheduler address ({exc})"
        ) from None
    except OSError:  # refused, unknown host, timed out (TimeoutError is an OSError)
        raise OptionUnavailable(
            f"--dask-address {address}: no Dask scheduler answered within "
            f"{DASK_CONNECT_SECONDS} s (is `dask scheduler` running there and reachable?)"
        ) from None


def dask_task_runner(address: str) -> Any:
    """prefect-dask's DaskTaskRunner on the scheduler at `address`, once it answers."""
    check_scheduler(address)
    from prefect_dask.task_runners import DaskTaskRunner

    return DaskTaskRunner(address=address)


def lost_scheduler(task_runner: Any, error: BaseException) -> str | None:
    """The scheduler address of `task_runner` when it is a Dask runner and `error` (raised while
    waiting on one of its futures) says the connection to its scheduler is gone; None otherwise.
    Dask raises CommClosedError (an OSError) for a closed connection, OSError for one it cannot
    open again, and CancelledError for the futures the scheduler forgot when it went away."""
    try:
        from concurrent.futures import CancelledError

        from prefect_dask.task_runners import DaskTaskRunner
    except ImportError:  # no dask extra: no Dask runner either
        return None
    if not isinstance(task_runner, DaskTaskRunner):
        return None
    if not isinstance(error, OSError | CancelledError):
        return None
    return str(task_runner.address or "(its local cluster)")
