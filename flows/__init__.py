"""Prefect flows: thin recipes that call extract, transform and load.

The only package that imports Prefect, so the one-off CLI export and the endpoint start fast.

Importing it sets one process-wide default, before anything here imports pyarrow: Arrow's C++
allocations (the Parquet writer, compute kernels) go to the system allocator, not mimalloc,
unless the operator chose otherwise (`ARROW_DEFAULT_MEMORY_POOL` already set). Arrow reads the
variable once, when pyarrow is first imported, and a pool switched later from Python
(`flows.analyst.use_system_allocator`) does not reach those C++ allocations. mimalloc keeps
freed pages for reuse in each of its arenas: in alternating runs of the 2,000-learner archive
with Parquet (two chunk threads), the flow process peaked at 315-350 MB with mimalloc and
281-283 MB with the system allocator, in as little time (README, "Performance").
"""

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
