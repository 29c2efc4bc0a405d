"""Fewer glibc malloc arenas for processes that allocate from many threads: the HTTP server's
worker processes (`serve.py`) and every process that imports the flows (`flows/__init__.py`).

glibc gives threads their own malloc arenas (up to 8 per core), and memory freed into one arena
is kept for that arena's threads. The server makes each document in one of many worker threads
and drops its bytes from the event loop's thread, so with the default every arena ends up
holding its own high-water mark: `bench/serve_load.py` saw a worker's RSS at 213 MiB where two
arenas kept it at 152 MiB for the same stalled exports. Two arenas is what `MALLOC_ARENA_MAX=2`
gives, set from inside the process (the variable is read only when a process starts).
"""

from __future__ import annotations

import ctypes

ARENAS = 2
_M_ARENA_MAX = -8
"""mallopt's parameter number for the arena limit (glibc's malloc.h)."""


def limit_malloc_arenas(count: int = ARENAS) -> bool:
    """Ask the C library to use at most `count` malloc arenas from now on; True when it agreed
    (glibc), False where there is no such setting (another C library: nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))
