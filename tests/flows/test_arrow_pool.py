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


def _run(code: str) -> str:
    """What `code` prints in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


PANDAS_AFTER_ARRAY = """
import sys
import pyarrow as pa
{before}
pa.array(["a", None, "b"], pa.string())
print("pandas" in sys.modules)
"""


def test_pyarrow_alone_imports_pandas_for_an_array_of_a_list() -> None:
    # What `keep_pandas_out_of_pyarrow` changes: ~30-40 MB of RSS for nothing the chunks use.
    assert _run(PANDAS_AFTER_ARRAY.format(before="")) == "True"


def test_the_chunk_tables_keep_pandas_out_of_pyarrow() -> None:
    before = "from flows.analyst import keep_pandas_out_of_pyarrow\nkeep_pandas_out_of_pyarrow()"
    assert _run(PANDAS_AFTER_ARRAY.format(before=before)) == "False"


def test_pyarrows_pandas_apis_still_work_after_it() -> None:
    """The report's way in (`Table.to_pandas`) and back (`Table.from_pandas`), then `pa.array` of a
    pandas Series, which pyarrow must convert as pandas again (its nulls), in the process whose
    chunks kept pandas out."""
    code = """
import pyarrow as pa
from flows.analyst import keep_pandas_out_of_pyarrow
keep_pandas_out_of_pyarrow()
keep_pandas_out_of_pyarrow()  # a second chunk: nothing more
table = pa.table({"score": pa.array([1, None, 3], pa.int64())})
frame = table.to_pandas()
back = pa.Table.from_pandas(frame, preserve_index=False)
series = pa.array(frame["score"])
print(type(frame).__name__, back.column("score").null_count, series.null_count)
"""
    assert _run(code) == "DataFrame 1 1"


def test_a_process_that_imported_pandas_is_left_alone() -> None:
    code = """
import sys
import pandas
from flows.analyst import keep_pandas_out_of_pyarrow
keep_pandas_out_of_pyarrow()
import pyarrow as pa
left = [f for f in sys.meta_path if type(f).__name__ == "_NoPandasNow"]
print(pa.array(pandas.Series([1.0, None])).null_count, left)
"""
    assert _run(code) == "1 []"
