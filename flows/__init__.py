"""Prefect flows: thin recipes that call extract, transform and load.

The only package that imports Prefect, so the one-off CLI export and the endpoint start fast.

Importing it sets one process-wide default (inherited by the processes it starts), before
anything here imports pyarrow: Arrow's C++ allocations (the Parquet writer, compute kernels) go
to the system allocator, not mimalloc, unless the operator chose otherwise
(`ARROW_DEFAULT_MEMORY_POOL` already set). Arrow reads the variable once, when pyarrow is first
imported, and a pool switched later from Python (`flows.analyst.use_system_allocator`) does not
reach those C++ allocations. mimalloc keeps freed pages for reuse: `bench/archive.py`'s archive
with Parquet peaked at 318-347 MB with it and 271-291 MB without, no slower (README,
"Benchmarks").

It also limits glibc to two malloc arenas, as `MALLOC_ARENA_MAX=2` would (unless the operator
set that variable): glibc gives each thread that allocates an arena of its own, up to 8 per core,
and each keeps its high-water mark, so the process grew slowly, run after run of chunk threads,
by memory free in some arena and kept there. With two, a 10,000-learner archive with Parquet
stayed within 230-239 MB over its 50 chunks, where the default crept from 234 to 247 MB (ad hoc,
RSS sampled every 0.2 s; `bench/scale.py` in the README for the measured runs).
"""

import os

from learner_export.malloc_arenas import limit_malloc_arenas

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
if "MALLOC_ARENA_MAX" not in os.environ:
    limit_malloc_arenas()
