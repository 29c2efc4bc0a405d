"""flows.dask_runner: a Dask address is refused in one line before a run writes anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.archive import archive_learners_on_dask
from flows.dask_runner import check_address, lost_scheduler
from flows.errors import OptionUnavailable
from flows.options import ArchiveOptions
from learner_export.processes import free_port


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("nonsense", "missing port number"),
        ("tcp://127.0.0.1", "missing port number"),
        ("http://127.0.0.1:8786", "unknown address scheme 'http'"),
        ("inproc://x", "no host and port in inproc://"),
    ],
)
def test_a_malformed_address_is_refused_without_connecting(address: str, says: str) -> None:
    with pytest.raises(OptionUnavailable, match="not a Dask scheduler address") as refused:
        check_address(address)
    assert says in str(refused.value)
    assert str(refused.value).count("\n") == 0


def test_well_formed_addresses_pass_without_a_scheduler() -> None:
    for address in ("tcp://10.0.0.5:8786", "tls://scheduler.example:8786", "127.0.0.1:8786"):
        check_address(address)  # deploy checks the form only: the cluster may be out of reach


@pytest.mark.slow
def test_a_deployed_run_without_a_scheduler_fails_before_writing(tmp_path: Path) -> None:
    """The deployment's flow (called as a plain function here) checks the scheduler first; Dask
    retries a refused connection until the check's 10 s are up."""
    dest = tmp_path / "dest"
    options = ArchiveOptions(dest=str(dest), run_id="nightly")
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(OptionUnavailable, match="no Dask scheduler answered within"):
        archive_learners_on_dask.fn(options=options, dask_address=address)
    assert not dest.exists()


def test_only_a_dask_runner_losing_its_scheduler_is_a_lost_cluster() -> None:
    """What `flows.archive` turns into ClusterLost: a connection error or a forgotten future of a
    Dask runner; anything else, or any error of the thread-pool runner, stays what it was."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask.task_runners import DaskTaskRunner

    dask = DaskTaskRunner(address="tcp://127.0.0.1:8786")
    assert lost_scheduler(dask, CommClosedError("in <TCP>: Stream is closed")) == dask.address
    assert lost_scheduler(dask, CancelledError("lost")) == dask.address
    assert lost_scheduler(dask, ValueError("a bug")) is None
    assert lost_scheduler(ThreadPoolTaskRunner(), CommClosedError("closed")) is None
    assert lost_scheduler(None, OSError("closed")) is None
