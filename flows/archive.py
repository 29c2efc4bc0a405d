"""The Prefect flows: `archive_learners` (every learner, or a list, in chunk tasks) and
`export_learner` (one learner, one file, through the same builder).

Thin by design: each task calls one function of `flows.run` or `flows.chunk`. One task per chunk
of many learners, never per learner (Prefect spends tens of ms on every task run). Retries sit on
the tasks that do I/O and fire only on transient errors; results stay in memory
(`persist_result=False`) and hold ids, paths and hashes, never a document.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import SecretStr

from extract.errors import TransientExtractError
from flows import archive_steps, passes, run
from flows.chunk import ChunkJob, archive_chunk, export_one
from flows.dask_runner import dask_task_runner, lost_scheduler
from flows.errors import ClusterLost, error_text
from flows.interrupt import stop_chunks_on_sigterm
from flows.options import (
    DEFAULT_WORKERS,
    ArchiveOptions,
    ArchiveSecrets,
    check_options,
    default_run_id,
    run_parameters,
)
from flows.progress import chunk_progress
from flows.summary import ArchiveResult, summary_markdown
from load.destination import check_run_id, open_destination
from load.errors import TransientLoadError
from load.manifest import ChunkTally, FileEntry, RunPlan

TASK_RETRIES = 3
TASK_RETRY_DELAYS = [2, 10, 30]
ARTIFACT_KEY = "learner-archive-summary"
REPORT_ARTIFACT_KEY = "learner-archive-report"
_T = TypeVar("_T")


def retry_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed task run only when its error is transient (source or destination)."""
    try:
        state.result()
    except (TransientExtractError, TransientLoadError):
        return True
    except Exception:
        return False
    return False


_IO_TASK: dict[str, Any] = {
    "retries": TASK_RETRIES,
    "retry_delay_seconds": TASK_RETRY_DELAYS,
    "retry_condition_fn": retry_transient,
    "cache_policy": NO_CACHE,  # resuming is the destination's business (part records)
    "persist_result": False,
}


open_run_task = task(name="open-run", **_IO_TASK)(archive_steps.open_run)
finish_run = task(name="finish-run", **_IO_TASK)(run.write_manifest)
write_report = task(name="write-report", **_IO_TASK)(archive_steps.write_report)
record_audit = task(name="record-audit", **_IO_TASK)(archive_steps.record_audit)
publish_run = task(name="publish-run", **_IO_TASK)(archive_steps.publish)
apply_retention = task(name="apply-retention", **_IO_TASK)(archive_steps.apply_retention)


@task(name="archive-chunk", task_run_name="archive-chunk-{index}", **_IO_TASK)
def archive_chunk_task(job: ChunkJob, index: int, learner_ids: list[int]) -> ChunkTally:
    # The tally, not the part: a run holds what grows with its chunks, never with its learners.
    return archive_chunk(job, index, learner_ids).tally()


@task(name="archive-pass", task_run_name="archive-pass-{first}", **_IO_TASK)
def archive_pass_task(job: ChunkJob, first: int, chunks: dict[int, list[int]]) -> list[ChunkTally]:
    return passes.archive_pass(job, chunks)


@flow(
    name="archive-learners",
    task_runner=ThreadPoolTaskRunner(max_workers=DEFAULT_WORKERS),  # type: ignore[arg-type]
    persist_result=False,
    validate_parameters=True,
)
def archive_learners(
    options: ArchiveOptions, secrets: ArchiveSecrets | None = None
) -> ArchiveResult:
    """Archive learners into one snapshot `<dest>/<run id>/`: documents, manifest, Parquet.

    The recipe is `flows.archive_steps.archive_run`, each step a task here. Resumable: rerunning
    with the same options after an interruption finishes the snapshot without redoing finished
    chunks; rerunning after it finished changes nothing. Raises RunFailed (nothing published)
    when a learner cannot be exported, unless `options.tolerate_failures`; RunMismatch when the
    run id exists with other options; RunLocked when another process writes the same run.
    """
    stop_chunks_on_sigterm()  # before Prefect's own SIGTERM handler: chunks stop at once
    logger = get_run_logger()
    clock = time.perf_counter()
    now = datetime.now(UTC)
    job = _job(options, secrets, now)
    outcome = archive_steps.archive_run(
        job,
        run_parameters(options),
        now=now,
        tolerate_failures=options.tolerate_failures,
        audit_log=options.audit_log,
        keep=options.keep,
        log=logger,
        steps=PREFECT_STEPS,
    )
    destination = open_destination(job.destination_url)
    result = ArchiveResult.from_manifest(
        outcome.manifest,
        truncated=outcome.truncated,
        status=outcome.status,
        snapshot=f"{destination.name.rstrip('/')}/{job.run_id}",
        deleted=outcome.deleted,
        chunks_run=outcome.chunks_run,
        seconds=time.perf_counter() - clock,
        read=outcome.read,
    )
    create_markdown_artifact(
        markdown=summary_markdown(result), key=ARTIFACT_KEY, description="Learner archive run"
    )
    if outcome.report_headline is not None:
        from flows.report import REPORT_NAME, headline_markdown

        create_markdown_artifact(
            markdown=headline_markdown(outcome.report_headline, f"{result.snapshot}/{REPORT_NAME}"),
            key=REPORT_ARTIFACT_KEY,
            description="Analyst report of the snapshot (headline figures)",
        )
    logger.info(
        "run %s %s: %d files, %d bytes, %d truncated, %d failed",
        result.run_id, result.status, result.counts.files, result.counts.bytes,
        result.counts.truncated, result.counts.failed,
    )  # fmt: skip
    return result


@flow(name="archive-learners-on-dask", persist_result=False, validate_parameters=True)
def archive_learners_on_dask(
    options: ArchiveOptions, dask_address: str, secrets: ArchiveSecrets | None = None
) -> ArchiveResult:
    """`archive_learners` (as its subflow run, the same snapshot) with its chunk tasks on the
    Dask scheduler at `dask_address`: the flow of `deploy --dask-address`, run by a Prefect
    worker while the chunks run on the cluster's Dask workers. Fails before the subflow starts,
    writing nothing, when no scheduler answers there (`flows.dask_runner`)."""
    runner = dask_task_runner(dask_address)
    return archive_learners.with_options(task_runner=runner)(options=options, secrets=secrets)


def _run_chunks(job: ChunkJob, plan: RunPlan, pending: list[int]) -> archive_steps.ChunkResults:
    """Run the pending chunks as tasks (in ordered passes on a source without the needed
    indexes, `flows.passes`); their parts, and the errors of chunks that failed."""
    if job.missing_indexes and pending:
        return _run_passes(job, plan, pending)
    logger = get_run_logger()
    already = len(plan.chunks) - len(pending)
    futures: dict[PrefectFuture[ChunkTally], int] = {
        archive_chunk_task.submit(job, index, plan.chunks[index]): index for index in pending
    }
    parts: dict[int, ChunkTally] = {}
    errors: dict[int, str] = {}
    with _collector_kept_out_of_the_chunks(), chunk_progress(len(plan.chunks), already) as advance:
        for future in as_completed(list(futures)):
            index = futures[future]
            outcome = _outcome(future, already + len(parts), len(plan.chunks))
            if isinstance(outcome, ChunkTally):
                parts[index] = outcome
                _log_chunk(outcome)
            else:
                errors[index] = error_text(outcome)
                logger.error("chunk %d failed: %s", index, errors[index])
            advance()
    return parts, errors


def _run_passes(job: ChunkJob, plan: RunPlan, pending: list[int]) -> archive_steps.ChunkResults:
    """The pending chunks in as many ordered passes as the flow's task runner runs at once,
    each pass a task."""
    logger = get_run_logger()
    context = FlowRunContext.get()
    count = passes.pass_count(context.task_runner if context else None, DEFAULT_WORKERS)
    runs = passes.passes_of(pending, count)
    logger.info("%d ordered passes over %d chunks", len(runs), len(pending))
    futures = {
        archive_pass_task.submit(job, run[0], {i: plan.chunks[i] for i in run}): run for run in runs
    }
    parts: dict[int, ChunkTally] = {}
    errors: dict[int, str] = {}
    already = len(plan.chunks) - len(pending)
    with _collector_kept_out_of_the_chunks(), chunk_progress(len(plan.chunks), already) as advance:
        for future in as_completed(list(futures)):
            indexes = futures[future]
            outcome = _outcome(future, already + len(parts), len(plan.chunks))
            failed: dict[int, str] = {}
            if isinstance(outcome, list):
                done = {tally.index: tally for tally in outcome}
            else:
                done, failed = passes.failed_pass(job, indexes, error_text(outcome))
            for part in done.values():
                _log_chunk(part)
            for index, error in failed.items():
                logger.error("chunk %d failed: %s", index, error)
            parts.update(done)
            errors.update(failed)
            for _ in indexes:
                advance()
    return parts, errors


def _outcome(future: PrefectFuture[_T], finished: int, chunks: int) -> _T | BaseException:
    """What a task returned, or the exception it failed with. A future that raises instead did
    not fail as a task: its runner lost the task. On a Dask scheduler that stopped answering
    (killed, restarted, its host gone) that ends the run in one line (ClusterLost), naming how
    many of the `chunks` are `finished`; a rerun does the rest."""
    try:
        return future.result(raise_on_failure=False)
    except Exception as exc:
        context = FlowRunContext.get()
        address = lost_scheduler(context.task_runner if context else None, exc)
        if address is None:
            raise
        raise ClusterLost(address, exc, finished, chunks) from None


def _log_chunk(tally: ChunkTally) -> None:
    get_run_logger().info(
        "chunk %d done: %d files, %d failed", tally.index, tally.files, len(tally.failures)
    )


PREFECT_STEPS = archive_steps.ArchiveSteps(
    open_run=open_run_task,
    run_chunks=_run_chunks,
    write_manifest=finish_run,
    write_report=write_report,
    record_audit=record_audit,
    publish=publish_run,
    apply_retention=apply_retention,
)
"""The recipe's steps as tasks: each retried on transient errors and recorded by Prefect."""

_CHUNK_PHASE_GC_THRESHOLD = 50_000
"""Allocations between young-generation collections while chunks run (Python's default: 700)."""


@contextmanager
def _collector_kept_out_of_the_chunks() -> Iterator[None]:
    """Keep the garbage collector out of the chunks' way while they run.

    The objects alive before the chunks (Prefect's, SQLAlchemy's, pydantic's: over 100,000) live
    as long as the process; frozen, the full collections the chunks trigger do not walk them
    again and again. The chunks allocate millions of short-lived, acyclic rows and document
    parts, freed by reference counting: with a higher young-generation threshold they are mostly
    gone before a collection looks at them. Measured on the 2,000-learner bench: 0.6 -> 0.2 s in
    collections, all of it holding the GIL. Restored afterwards, so a long-lived process
    (`learner-export schedule`) collects as usual between runs.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(_CHUNK_PHASE_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _job(options: ArchiveOptions, secrets: ArchiveSecrets | None, now: datetime) -> ChunkJob:
    """The job of this run, checking that every key an option needs is configured."""
    if secrets is None:  # a scheduled run: its settings come from the serving process
        from learner_export.settings import get_settings

        secrets = ArchiveSecrets.from_settings(get_settings())
    encryption_key = _revealed(secrets.encryption_key)
    pseudonym_key = _revealed(secrets.pseudonym_key)
    check_options(options, encryption_key=encryption_key, pseudonym_key=pseudonym_key)
    return ChunkJob(
        destination_url=options.dest,
        run_id=check_run_id(options.run_id or default_run_id(options.learners, now)),
        source_url=secrets.source_url.get_secret_value(),
        export_date=now,
        exported_by=options.exported_by,
        compress=options.compress,
        encryption_key=encryption_key if options.encrypt else None,
        parquet=options.parquet,
        pseudonym_key=pseudonym_key if options.parquet else None,
        **_page_options(options),
    )


def _page_options(options: ArchiveOptions) -> dict[str, Any]:
    """The ChunkJob fields of `--html`: the operator's notice (its retention told by this run's
    `--keep` when given) and what the documents leave out (the coverage registry)."""
    if not options.html:
        return {}
    from learner_export.notice_config import left_out, operator_notice
    from learner_export.settings import get_settings

    notice = operator_notice(get_settings())
    if options.keep is not None:
        notice = dataclasses.replace(notice, archive_keep=options.keep)
    return {"html": True, "notice": notice, "left_out": tuple(left_out())}


def _revealed(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


@task(name="export-learner-file", **_IO_TASK)
def export_learner_file(job: ChunkJob, learner_id: int) -> FileEntry:
    return export_one(job, learner_id)


@flow(name="export-learner", persist_result=False)
def export_learner(
    learner_id: int,
    dest: str,
    exported_by: int | None = None,
    compress: Literal["gzip", "zstd"] | None = None,
    encrypt: bool = False,
    secrets: ArchiveSecrets | None = None,
) -> FileEntry:
    """One learner's document, written to `<dest>/learner-data-{id}-{date}.json[...]` with
    the same builder and encoder as every other export."""
    options = ArchiveOptions(
        dest=dest, exported_by=exported_by, compress=compress, encrypt=encrypt, parquet=False
    )
    now = datetime.now(UTC)
    job = dataclasses.replace(_job(options, secrets, now), run_id="single")
    return export_learner_file(job, learner_id)
