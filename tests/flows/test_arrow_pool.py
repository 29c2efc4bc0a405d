"""How a process that runs flows sets pyarrow up, each case in a fresh interpreter (pyarrow makes
both choices once per process): Arrow's allocations go to the system allocator from the start
(`flows/__init__.py`) unless the operator chose a pool, and the chunk tables keep pyarrow from
importing pandas (`flows.analyst.keep_pandas_out_of_pyarrow`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DemoSource

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


ROUND_TRIP = """
import datetime
import pyarrow as pa
{before}
at = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
table = pa.table({{
    "score": pa.array([1, None, 3], pa.int64()),
    "at": pa.array([at, None, at], pa.timestamp("us", tz="UTC")),
    "subject": pa.array(["math", None, "art"]).dictionary_encode(),
}})
frame = table.to_pandas()
back = pa.Table.from_pandas(frame, preserve_index=False)
print(frame.dtypes.to_dict(), frame.isna().sum().to_dict())
print(back.schema.remove_metadata(), [back.column(n).null_count for n in back.column_names])
print(pa.array(frame["score"]).null_count, pa.array(frame["at"]).null_count)
"""


def test_pyarrows_pandas_apis_work_the_same_after_it() -> None:
    """The report's way in (`Table.to_pandas`) and back (`Table.from_pandas`, `pa.array` of a
    Series: NaN and NaT are nulls), in the process whose chunks kept pandas out, give what they
    give in a process that never did."""
    before = "from flows.analyst import keep_pandas_out_of_pyarrow\n" + (
        "keep_pandas_out_of_pyarrow()\n" * 2  # a second chunk: nothing more
    )
    kept_out = _run(ROUND_TRIP.format(before=before))
    assert kept_out == _run(ROUND_TRIP.format(before=""))
    assert "datetime64[us, UTC]" in kept_out and "'score': 1" in kept_out


def test_what_it_gives_up_pandas_missing_values_inside_python_lists() -> None:
    """The one thing that changes, pinned so that a new pyarrow that changes it is noticed:
    Arrow's converter looks for pandas once per process, so after the chunks `from_pandas=True`
    no longer knows pandas' `NA` and `NaT` inside a plain list (the chunks and the report never
    give it one: the report only reads Arrow into pandas)."""
    code = """
import pyarrow as pa
from flows.analyst import keep_pandas_out_of_pyarrow
keep_pandas_out_of_pyarrow()
import pandas as pd
try:
    print(pa.array([1, pd.NA, 2.0, pd.NaT], from_pandas=True).null_count)
except pa.ArrowInvalid:
    print("refused")
"""
    assert _run(code) == "refused"
    assert _run(code.replace("keep_pandas_out_of_pyarrow()\n", "")) == "2"


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


CHUNK = """
import sys
from datetime import UTC, datetime
from flows.chunk import ChunkJob, archive_chunk
job = ChunkJob(
    destination_url=sys.argv[1], run_id="r1", source_url=sys.argv[2],
    export_date=datetime(2024, 1, 15, tzinfo=UTC), exported_by=1, compress=None,
    encryption_key=None, parquet=True, pseudonym_key="pseudonym-key-of-this-test",
)
part = archive_chunk(job, 0, [int(i) for i in sys.argv[3].split(",")])
print(len(part.files), sorted({p.table for p in part.parquet}) != [], "pandas" in sys.modules)
"""


def test_a_chunk_with_parquet_never_imports_pandas(demo_source: DemoSource, tmp_path: Path) -> None:
    """The whole chunk, every table and both databases' ways of converting rows (SQLite's text
    timestamps go another way): nothing in it asks pyarrow for pandas once the tables kept it
    out. A conversion added later that brings pandas back in fails here, not in a bench."""
    ids = demo_source.rows.learner_ids
    done = subprocess.run(
        [sys.executable, "-c", CHUNK, str(tmp_path), demo_source.url, ",".join(map(str, ids))],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(len(ids)), "True", "False"]
