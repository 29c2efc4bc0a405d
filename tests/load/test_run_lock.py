"""One writer per run: the lock, across processes, and after its holder was killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from load.destination import open_destination
from load.run_lock import RunLocked, check_unlocked, lock_path, run_lock

HOLD = """
import sys, time
from load.destination import open_destination
from load.run_lock import run_lock
with run_lock(open_destination(sys.argv[1]), "r"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(dest: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(dest)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    return process


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    destination = open_destination(str(tmp_path))
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunLocked) as refused, run_lock(destination, "r"):
            pass
        assert f"run r is being written by another process (pid {holder.pid} on " in str(
            refused.value
        )
        with pytest.raises(RunLocked):
            check_unlocked(destination, "r")
        with run_lock(destination, "other"):  # other runs are not held up
            pass
    finally:
        holder.kill()
        holder.communicate()


def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    destination = open_destination(str(tmp_path))
    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    assert lock_path(destination, "r").exists()  # the file stays; the kernel dropped the lock
    with run_lock(destination, "r"):
        pass
    assert not (tmp_path / ".incomplete").exists()  # released: nothing left behind


def test_checking_an_unheld_lock_creates_nothing(tmp_path: Path) -> None:
    check_unlocked(open_destination(str(tmp_path / "dest")), "r")
    assert not (tmp_path / "dest").exists()


def test_object_stores_take_no_lock() -> None:
    with (
        run_lock(open_destination("memory://locks"), "r"),
        run_lock(open_destination("memory://locks"), "r"),
    ):
        pass
