"""Helpers of the analyst-table tests: the demo read the way the flows read it, and what the
demo rows say independently of the code under test."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from extract.engine import create_source_engine, snapshot
from extract.reader import all_learner_ids, read_learners
from extract.records import LearnerRows
from flows.archive_steps import archive_run
from flows.chunk import ChunkJob
from learner_export.demo import DemoRows
from load.manifest import RunParameters
from tests.conftest import DemoSource
from transform.tables import RunStamp

KEY = b"tests-only pseudonym key 32bytes"
OTHER_KEY = b"another tests-only pseudonym key"
RUN = RunStamp("2026-01-01", datetime(2026, 1, 1, 2, 0, 0, 123000, tzinfo=UTC))
"""The run every analyst-table test stamps its rows with."""


def demo_chunks(source: DemoSource, size: int) -> Iterator[list[LearnerRows]]:
    """Every learner of the demo, `size` at a time, each chunk read with every lesson."""
    engine = create_source_engine(source.url)
    try:
        with snapshot(engine) as conn:
            ids = all_learner_ids(conn)
            for start in range(0, len(ids), size):
                found = read_learners(conn, ids[start : start + size], lesson_limit=None)
                yield [found[learner_id] for learner_id in sorted(found)]
    finally:
        engine.dispose()


def demo_learners(source: DemoSource) -> list[LearnerRows]:
    return [learner for chunk in demo_chunks(source, 1_000) for learner in chunk]


def personal_values(rows: DemoRows) -> list[str]:
    """Every name, email, username and password hash of the demo users."""
    columns = ("name", "email", "username", "password")
    return [user[c] for user in rows.users for c in columns if user[c]]


def question_counts(rows: DemoRows) -> dict[str, int]:
    """Per lesson id, how many entries its spec's `questions` list has (0 when it has none or
    the spec is NULL or not valid JSON), read with the standard library's json."""
    return {lesson["id"]: len(_questions(lesson["spec"])) for lesson in rows.lessons}


def _questions(spec_text: str | bytes | None) -> list[Any]:
    if spec_text is None:
        return []
    try:
        spec = json.loads(spec_text)
    except json.JSONDecodeError:
        return []
    questions = spec.get("questions") if isinstance(spec, dict) else None
    return questions if isinstance(questions, list) else []


def write_snapshot(
    source: DemoSource,
    dest: Path,
    run_id: str,
    *,
    report: bool = False,
    chunk_size: int = 5,
    compress: Literal["gzip", "zstd"] | None = None,
    encryption_key: str | None = None,
) -> Path:
    """Archive every learner of `source` into `dest/<run_id>/` with Parquet, through the
    archive's recipe with its plain steps (no Prefect): the snapshot's directory."""
    parameters = RunParameters(
        learners="all", chunk_size=chunk_size, compress=compress,
        encrypt=encryption_key is not None, exported_by=None, parquet=True, report=report,
    )  # fmt: skip
    now = datetime.fromisoformat(f"{run_id[:10]}T02:00:00+00:00")
    job = ChunkJob(
        destination_url=str(dest), run_id=run_id, source_url=source.url, export_date=now,
        exported_by=None, compress=compress, encryption_key=encryption_key, parquet=True,
        pseudonym_key=KEY.decode(),
    )  # fmt: skip
    archive_run(
        job, parameters, now=now, tolerate_failures=False, audit_log=None, keep=None,
        log=logging.getLogger("tests"),
    )  # fmt: skip
    return dest / run_id
