"""An archive run as one recipe of plain steps, the same with Prefect and without.

`archive_run` is the order of things: hold the run's lock, open (or resume) the run, export the
chunks still to do, write the manifest, write the analyst report into the run (`--report`; the
manifest is written again, listing it), append the run's audit lines, publish, apply retention.
Each step is a plain function of `flows.run`, `flows.chunk` or `load`; `flows.archive` runs the
same recipe with each step wrapped in a Prefect task (retries, records), and the fault tests run
it with the plain functions, so what they prove about the order is what the flow does.

The order is what makes every interruption recoverable:
- the manifest is written (state 2) only once every chunk has its part record;
- the audit lines are appended before the snapshot is published, only those of the run's
  learners not already in the log, so a crash between the two never loses them and a rerun
  never doubles one;
- publishing is the last step that changes the run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from extract.indexes import missing_index_columns
from extract.source_check import check_source
from flows import passes, run
from flows.chunk import ChunkJob, archive_chunk
from flows.errors import error_text
from load.audit import audit_manifest
from load.destination import Destination, open_destination, remove_incomplete_root
from load.manifest import ChunkTally, ManifestHead, RunParameters, RunPlan
from load.run_lock import run_lock

if TYPE_CHECKING:
    from flows.report import ReportWritten

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True)
class Opened:
    """A run as found on the destination: finished (`manifest`, `published` or not), or still to
    do (`plan`, with the `parts` of the chunks already finished)."""

    manifest: ManifestHead | None
    published: bool
    plan: RunPlan | None
    parts: dict[int, ChunkTally]


def open_run(job: ChunkJob, parameters: RunParameters, now: datetime) -> Opened:
    """The run `job.run_id` as it stands, made with `parameters` (RunMismatch otherwise); a run
    that does not exist yet is planned, after the source's tables are checked."""
    destination = open_destination(job.destination_url)
    for published, find in ((True, run.published_manifest), (False, run.pending_manifest)):
        manifest = find(destination, job.run_id)
        if manifest is None:
            continue
        run.check_identity(destination, job.run_id, manifest.parameters, parameters, finished=True)
        if published or not run.incomplete_manifest(destination, manifest):
            return Opened(manifest, published, None, {})
        # Files it lists were removed (with the destination): back to writing the chunks.
        run.discard_manifest(destination, job.run_id)
    # Before the first file: a source whose exported columns are gone or retyped is refused.
    check_source(job.source_url)
    plan = run.open_plan(
        destination, job.run_id, parameters, now=now, learner_ids=lambda: learner_ids(job)
    )
    return Opened(None, False, plan, run.finished_parts(destination, plan))


def learner_ids(job: ChunkJob) -> list[int]:
    """Every LEARNER's id in the source, ascending."""
    from extract.engine import create_source_engine, snapshot
    from extract.reader import all_learner_ids

    engine = create_source_engine(job.source_url)
    try:
        with snapshot(engine) as conn:
            return all_learner_ids(conn)
    finally:
        engine.dispose()


def record_audit(
    audit_log: str,
    destination: Destination,
    manifest: ManifestHead,
    exported_by: int | None,
    published: bool,
) -> int:
    """Append the run's audit lines, only those missing from the log (an earlier attempt may
    have appended some), its entries streamed from its written manifest (in its snapshot once
    `published`); returns how many lines were appended."""
    entries = run.written_entries(destination, manifest.run_id, published=published)
    return audit_manifest(Path(audit_log), manifest, entries, exported_by, resumed=True)


def truncated_learners(destination: Destination, manifest: ManifestHead) -> list[int]:
    """The ids of the published snapshot's truncated learners (its entries are read only when
    it has any)."""
    if not manifest.counts.truncated:
        return []
    entries = run.written_entries(destination, manifest.run_id, published=True)
    return [entry.learner_id for entry in entries if entry.truncated]


def publish(destination: Destination, manifest: ManifestHead) -> str:
    """Remove the run's leftovers and publish it; returns the snapshot directory."""
    snapshot = run.publish_run(destination, manifest)
    remove_incomplete_root(destination)
    return snapshot


def write_report(destination: Destination, manifest: ManifestHead) -> ReportWritten:
    """Write the run's analyst report and list it in its manifest (`flows.report`; pandas and
    matplotlib are imported only by runs that ask for a report)."""
    from flows.report import write_report as write

    return write(destination, manifest)


def apply_retention(job: ChunkJob, keep: int, now: datetime) -> list[str]:
    """Delete all but the `keep` newest snapshots (never this one); the deleted run ids."""
    return run.apply_retention(
        open_destination(job.destination_url), keep, current=job.run_id, now=now
    )


ChunkResults = tuple[dict[int, ChunkTally], dict[int, str]]
"""The tallies of the chunks that finished, and the error text of each chunk that failed."""


class ChunkRunner(Protocol):
    def __call__(self, job: ChunkJob, plan: RunPlan, pending: list[int]) -> ChunkResults: ...


def run_chunks_in_order(job: ChunkJob, plan: RunPlan, pending: list[int]) -> ChunkResults:
    """The pending chunks one after another in this thread (the flow runs them as tasks). A
    chunk that raises is recorded as failed, as a task that failed after its retries is. On a
    source without the needed indexes, all of them in one ordered pass (`flows.passes`)."""
    parts: dict[int, ChunkTally] = {}
    errors: dict[int, str] = {}
    if job.missing_indexes and pending:
        try:
            finished = passes.archive_pass(job, {i: plan.chunks[i] for i in pending})
        except Exception as exc:
            return passes.failed_pass(job, pending, error_text(exc))
        return {tally.index: tally for tally in finished}, errors
    for index in pending:
        try:
            parts[index] = archive_chunk(job, index, plan.chunks[index]).tally()
        except Exception as exc:
            errors[index] = error_text(exc)
    return parts, errors


@dataclass(frozen=True)
class ArchiveSteps:
    """The steps `archive_run` calls: plain functions by default, Prefect tasks in the flow."""

    open_run: Callable[[ChunkJob, RunParameters, datetime], Opened] = open_run
    run_chunks: ChunkRunner = run_chunks_in_order
    write_manifest: Callable[..., ManifestHead] = run.write_manifest
    write_report: Callable[[Destination, ManifestHead], ReportWritten] = write_report
    record_audit: Callable[[str, Destination, ManifestHead, int | None, bool], int] = record_audit
    publish: Callable[[Destination, ManifestHead], str] = publish
    apply_retention: Callable[[ChunkJob, int, datetime], list[str]] = apply_retention


@dataclass(frozen=True)
class RunOutcome:
    """What a run did: its manifest (head), whether this call finished it, the chunks it
    exported, the audit lines it appended, the snapshots retention deleted, the headline figures
    of the report this call wrote (None when it wrote none), how it read the source
    (`flows.passes.read_way`; None when it had no chunk to read) and the ids of its truncated
    learners."""

    manifest: ManifestHead
    status: Literal["complete", "already-complete"]
    chunks_run: int
    audit_lines: int
    deleted: list[str]
    report_headline: list[tuple[str, str]] | None = None
    read: str | None = None
    truncated: list[int] = dataclasses.field(default_factory=list)


def archive_run(
    job: ChunkJob,
    parameters: RunParameters,
    *,
    now: datetime,
    tolerate_failures: bool,
    audit_log: str | None,
    keep: int | None,
    log: Logger,
    steps: ArchiveSteps = ArchiveSteps(),
) -> RunOutcome:
    """Archive `job`'s learners into the snapshot `<dest>/<run id>/` (see the module's order).

    Resumable at every step: the same call after an interruption finishes the same snapshot
    with the same export date; after it finished, it changes nothing (but appends audit lines
    an interruption may have lost). Raises RunLocked when another process writes the run,
    RunMismatch when the run exists with other options, RunFailed when learners failed and
    failures are not tolerated (nothing published).
    """
    clock = time.perf_counter()
    destination = open_destination(job.destination_url)
    with run_lock(destination, job.run_id):
        opened = steps.open_run(job, parameters, now)
        chunks_run = 0
        read: str | None = None
        if opened.manifest is None:
            assert opened.plan is not None
            plan = opened.plan
            job = dataclasses.replace(job, export_date=datetime.fromisoformat(plan.export_date))
            pending = run.pending_chunks(plan, opened.parts)
            if len(pending) > 1:
                missing = missing_index_columns(job.source_url)
                job = dataclasses.replace(job, missing_indexes=missing or ())
                read = passes.read_way(missing)
            elif pending:
                read = passes.ONE_CHUNK
            log.info(
                "run %s: %d learners in %d chunks, %d to do, %s",
                job.run_id, sum(len(c) for c in plan.chunks), len(plan.chunks), len(pending),
                read,
            )  # fmt: skip
            done, errors = steps.run_chunks(job, plan, pending)
            manifest = steps.write_manifest(
                destination,
                plan,
                {**opened.parts, **done},
                chunk_errors=errors,
                tolerate_failures=tolerate_failures,
                now=datetime.now(now.tzinfo),
                seconds=time.perf_counter() - clock,
            )
            chunks_run = len(pending)
        else:
            manifest = opened.manifest
        headline = None
        if manifest.parameters.report and manifest.report is None and not opened.published:
            # After the manifest (the tables are complete and listed), before publishing: a run
            # killed in between writes it again, from the same tables, to the same bytes.
            written = steps.write_report(destination, manifest)
            manifest, headline = written.manifest, written.headline
        lines = 0
        if audit_log:
            # Always searched first: an earlier attempt may have appended some of this run's
            # lines (killed before publishing, or its destination lost after appending them).
            lines = steps.record_audit(
                audit_log, destination, manifest, job.exported_by, opened.published
            )
            if lines:
                log.info("run %s: %d lines appended to the audit log", job.run_id, lines)
        if not opened.published:
            steps.publish(destination, manifest)
    status: Literal["complete", "already-complete"] = "complete"
    if opened.published:
        log.info("run %s is already complete: nothing to do", job.run_id)
        status = "already-complete"
    deleted = [] if keep is None else steps.apply_retention(job, keep, now)
    for run_id in deleted:
        log.info("retention: deleted snapshot %s", run_id)
    truncated = truncated_learners(destination, manifest)
    return RunOutcome(manifest, status, chunks_run, lines, deleted, headline, read, truncated)
