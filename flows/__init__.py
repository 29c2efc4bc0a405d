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
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
