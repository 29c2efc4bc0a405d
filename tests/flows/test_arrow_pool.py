"""A process that runs flows gives Arrow's allocations to the system allocator from the start
(`flows/__init__.py`), unless the operator chose a pool. Each case is a fresh interpreter: Arrow
reads its choice once, when pyarrow is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _backend(code: str, **environment: str) -> str:
    """The default memory pool's backend after running `code` in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    env.update(environment)
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport pyarrow as pa\n"
         "print(pa.default_memory_pool().backend_name)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def test_pyarrow_alone_would_use_mimalloc() -> None:
    # What the setting changes: without it, this pyarrow build allocates with mimalloc.
    assert _backend("") == "mimalloc"


@pytest.mark.parametrize(
    "entry",
    [
        "import flows.archive",  # a Prefect worker, a Dask worker, bench/scale.py's child
        "from learner_export.cli import build_parser; build_parser()",  # `learner-export ...`
    ],
)
def test_a_process_that_runs_flows_allocates_with_malloc(entry: str) -> None:
    assert _backend(entry) == "system"


def test_the_operators_choice_of_pool_is_kept() -> None:
    chosen = "import flows.analyst\nflows.analyst.use_system_allocator()"
    assert _backend(chosen, ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"


def test_pyarrow_imported_first_is_switched_for_pyarrows_own_allocations() -> None:
    late = "import pyarrow\nimport flows.analyst\nflows.analyst.use_system_allocator()"
    assert _backend(late) == "system"
