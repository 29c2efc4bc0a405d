"""Importing the flows limits glibc to two malloc arenas, unless the operator chose a number."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_THREADS_ALLOCATE = """
import ctypes, threading
{imports}
together = threading.Barrier(8)
def work():
    together.wait()
    kept = [bytearray(64 * 1024) for _ in range(50)]  # above Python's small-object allocator
    together.wait()  # all alive at once: an exited thread's arena would be handed on
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(imports: str, **env: str) -> int:
    """How many malloc arenas a fresh interpreter has after eight threads allocated at once."""
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_ALLOCATE.format(imports=imports)],
        env=environment, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_stats")
def test_importing_the_flows_keeps_the_threads_to_two_arenas() -> None:
    assert _arenas("") > 2  # glibc's default: an arena per allocating thread
    assert _arenas("import flows") == 2
    assert _arenas("import flows", MALLOC_ARENA_MAX="3") == 3  # the operator's choice stands
