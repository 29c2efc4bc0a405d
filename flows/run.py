"""Starting, resuming and finishing a run: the steps before and after the chunks.

Plain functions over `load.destination` and `load.manifest`; `flows.archive` wraps them in tasks.
A run moves through three states, each recognisable on the destination, which is what makes it
resumable after a kill at any moment:

1. `.incomplete/<run>/plan.json` exists: chunks are being written; a chunk with a part record
   (and no failures) is finished and is not redone.
2. `.incomplete/<run>/manifest.json` exists: every chunk is done; what remains is removing
   leftovers (temporary files of killed writes, the plan and parts) and publishing.
3. `<run>/manifest.json` exists: the snapshot is complete; running again changes nothing.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TypeVar

import orjson
from pydantic import ValidationError

from flows.errors import RunFailed, RunMismatch
from load.destination import (
    Destination,
    delete_snapshot,
    list_files,
    publish,
    published_runs,
    read_if_exists,
    remove_dir,
    remove_empty_dirs,
    remove_files,
    write_file,
    write_pieces,
)
from load.errors import TerminalLoadError
from load.manifest import (
    MANIFEST_NAME,
    PARTS_DIR,
    PLAN_NAME,
    ChunkPart,
    ChunkTally,
    Failure,
    FileEntry,
    ManifestHead,
    RunParameters,
    RunPlan,
    build_head,
    chunked,
    entry_paths,
    manifest_pieces,
    part_path,
    to_json,
)
from load.parquet import IN_PROGRESS_SUFFIX
from load.snapshot_files import read_entries
from transform.values import iso_timestamp


def published_manifest(destination: Destination, run_id: str) -> ManifestHead | None:
    """The manifest head of the finished snapshot `run_id`, or None when it is not finished."""
    path = posixpath.join(destination.snapshot_dir(run_id), MANIFEST_NAME)
    return _read_record(destination, path, ManifestHead)


def open_plan(
    destination: Destination,
    run_id: str,
    parameters: RunParameters,
    *,
    now: datetime,
    learner_ids: Callable[[], list[int]],
) -> RunPlan:
    """The plan of the unfinished run `run_id`, or a new one (written before any chunk starts).

    A new plan reads the learner ids once (`learner_ids()` when every learner is asked for) and
    cuts them into chunks. An existing plan must have been made with the same `parameters`.
    """
    path = posixpath.join(destination.incomplete_dir(run_id), PLAN_NAME)
    plan = _read_record(destination, path, RunPlan)
    if plan is not None:
        check_identity(destination, run_id, plan.parameters, parameters, finished=False)
        return plan
    ids = learner_ids() if parameters.learners == "all" else list(parameters.learners)
    stamp = iso_timestamp(now)
    assert stamp is not None
    plan = RunPlan(
        run_id=run_id,
        started_at=stamp,
        export_date=stamp,
        parameters=parameters,
        chunks=chunked(ids, parameters.chunk_size),
    )
    write_file(destination.fs, path, to_json(plan))
    return plan


def existing_run(destination: Destination, run_id: str) -> tuple[str, RunParameters] | None:
    """What the destination holds of `run_id` and the options it was made with: ("published",
    ...), ("written", ...) for a run whose manifest is written but not yet published, ("started",
    ...) for one with a plan, or None when there is no trace of it."""
    for state, record in (
        ("published", published_manifest(destination, run_id)),
        ("written", pending_manifest(destination, run_id)),
        ("started", _read_record(
            destination, posixpath.join(destination.incomplete_dir(run_id), PLAN_NAME), RunPlan
        )),
    ):  # fmt: skip
        if record is not None:
            return state, record.parameters
    return None


def check_identity(
    destination: Destination,
    run_id: str,
    existing: RunParameters,
    wanted: RunParameters,
    *,
    finished: bool,
) -> None:
    """Raise RunMismatch, naming what differs and what to do, unless a run that exists as
    `run_id` (finished or not) was made with the `wanted` options and learners: a run id names
    one set of options and learners, so asking for it with others never passes silently."""
    if existing == wanted:
        return
    differ = ", ".join(
        name for name, value in wanted.model_dump().items() if existing.model_dump()[name] != value
    )
    if finished:
        raise RunMismatch(
            f"snapshot {run_id} in {destination.name} was made with other options ({differ} "
            "differ); nothing was written. Give this run its own --run-id (e.g. "
            f"--run-id {run_id}-2)"
        )
    raise RunMismatch(
        f"unfinished run {run_id} in {destination.name} was started with other options ({differ} "
        "differ); nothing was written. Repeat its options to finish it, give this run its own "
        f"--run-id, or drop it with: learner-export abandon {run_id} --dest {destination.name}"
    )


def abandon_run(destination: Destination, run_id: str) -> tuple[int, str | None]:
    """Remove the unfinished run `run_id` (everything under `.incomplete/<run>/`); returns how
    many files were removed and when the run started (None if it had no plan yet). The caller
    holds the run's lock. A published snapshot is never touched: `--keep` retention removes
    those."""
    if published_manifest(destination, run_id) is not None:
        raise RunMismatch(
            f"snapshot {run_id} in {destination.name} is finished and published; abandon drops "
            "unfinished runs only"
        )
    run_dir = destination.incomplete_dir(run_id)
    names = list_files(destination.fs, run_dir)
    if not names:
        raise RunMismatch(f"there is no unfinished run {run_id} in {destination.name}")
    plan = _read_record(destination, posixpath.join(run_dir, PLAN_NAME), RunPlan)
    # The plan and the part records last: an abandon cut short is still an unfinished run.
    names.sort(key=lambda name: (name == PLAN_NAME, name.startswith(PARTS_DIR + "/")))
    remove_files(destination.fs, run_dir, names)
    remove_empty_dirs(destination.fs, run_dir)
    remove_dir(destination.fs, run_dir)
    return len(names), None if plan is None else plan.started_at


def finished_parts(destination: Destination, plan: RunPlan) -> dict[int, ChunkTally]:
    """The tally of every chunk that has a part record and whose files are all there, by chunk
    index (a chunk whose files were removed since, with the destination, is done again). One
    part record is held at a time."""
    run_dir = destination.incomplete_dir(plan.run_id)
    present = set(list_files(destination.fs, run_dir))
    parts = {}
    for index in range(len(plan.chunks)):
        part = _read_record(destination, posixpath.join(run_dir, part_path(index)), ChunkPart)
        if part is None:
            continue
        written = [p for f in part.files for p in entry_paths(f)] + [p.path for p in part.parquet]
        if not missing_files(written, present):
            parts[index] = part.tally()
    return parts


def missing_files(paths: list[str], present: set[str]) -> list[str]:
    """Which of `paths` (relative to a run directory) are not among `present`; a Parquet part
    still under its in-progress name counts as there."""
    return [p for p in paths if p not in present and p + IN_PROGRESS_SUFFIX not in present]


def incomplete_manifest(destination: Destination, manifest: ManifestHead) -> list[str]:
    """The files the run's written manifest lists that are not in its directory (removed while
    the run was writing): [] when the run can be published."""
    run_dir = destination.incomplete_dir(manifest.run_id)
    present = set(list_files(destination.fs, run_dir))
    listed = sorted(manifest.listed_besides_files())
    missing = missing_files(listed, present)
    for entry in read_entries(destination.fs, run_dir):
        missing += missing_files(list(entry_paths(entry)), present)
    return missing


def pending_chunks(plan: RunPlan, parts: dict[int, ChunkTally]) -> list[int]:
    """Chunks still to do: those without a part, and those whose learners failed (retried)."""
    return [
        index for index in range(len(plan.chunks)) if index not in parts or parts[index].failures
    ]


def write_manifest(
    destination: Destination,
    plan: RunPlan,
    parts: dict[int, ChunkTally],
    *,
    chunk_errors: dict[int, str],
    tolerate_failures: bool,
    now: datetime,
    seconds: float,
) -> ManifestHead:
    """Write the run's manifest into its incomplete directory (state 2); returns its head.

    `chunk_errors` are chunks that failed as a whole (after their retries): each of their
    learners is a failure. Unless `tolerate_failures`, any failure or requested id that is not
    a learner raises RunFailed and nothing is written. The entries are streamed from the part
    records, one read at a time (`manifest_pieces`): writing the manifest of a million learners
    holds one chunk's entries.
    """
    every = dict(parts)
    for index, error in chunk_errors.items():
        ids = plan.chunks[index]
        failures = [Failure(learner_id=i, chunk=index, error=error) for i in ids]
        every[index] = ChunkTally(
            index=index, files=0, bytes=0, truncated=0, problems=0, failures=failures, seconds=0
        )
    missing = [i for i in range(len(plan.chunks)) if i not in every]
    if missing:
        raise TerminalLoadError(f"run {plan.run_id}: chunks {missing} have no part record")
    unexported = sorted(
        [f.learner_id for p in every.values() for f in p.failures]
        + [i for p in every.values() for i in p.not_found]
    )
    if unexported and not tolerate_failures:
        errors = [f.error for index in sorted(every) for f in every[index].failures]
        raise RunFailed(plan.run_id, unexported, errors[0] if errors else None)
    finished_at = iso_timestamp(now)
    assert finished_at is not None
    manifest = build_head(plan, every.values(), finished_at=finished_at, seconds=seconds)
    run_dir = destination.incomplete_dir(plan.run_id)
    if plan.parameters.parquet:
        from flows.analyst import write_dictionary  # pyarrow only for runs with Parquet

        manifest = write_dictionary(destination, run_dir, manifest)
    entries = _part_entries(destination, plan.run_id, [every[i] for i in sorted(every)])
    path = posixpath.join(run_dir, MANIFEST_NAME)
    write_pieces(destination.fs, path, manifest_pieces(manifest, entries))
    return manifest


def _part_entries(
    destination: Destination, run_id: str, tallies: list[ChunkTally]
) -> Iterator[FileEntry]:
    """The file entries of these chunks (in chunk order) from their part records, in learner id
    order, one part record read at a time."""
    run_dir = destination.incomplete_dir(run_id)
    for tally in tallies:
        if not tally.files:
            continue
        part = _read_record(destination, posixpath.join(run_dir, part_path(tally.index)), ChunkPart)
        if part is None or len(part.files) != tally.files:
            raise TerminalLoadError(
                f"run {run_id}: the part record of chunk {tally.index} is gone or changed since "
                "the chunk finished; run the same command again to redo the chunk"
            )
        yield from sorted(part.files, key=lambda f: f.learner_id)


def rewrite_manifest(destination: Destination, manifest: ManifestHead) -> None:
    """Write the unpublished run's manifest again with this head (listing a file written
    since), its entries streamed from the manifest as written."""
    run_dir = destination.incomplete_dir(manifest.run_id)
    pieces = manifest_pieces(manifest, read_entries(destination.fs, run_dir))
    write_pieces(destination.fs, posixpath.join(run_dir, MANIFEST_NAME), pieces)


def written_entries(
    destination: Destination, run_id: str, *, published: bool
) -> Iterator[FileEntry]:
    """The file entries of the run's written manifest (of its snapshot once `published`),
    streamed in learner id order."""
    directory = (
        destination.snapshot_dir(run_id) if published else destination.incomplete_dir(run_id)
    )
    return read_entries(destination.fs, directory)


def publish_run(destination: Destination, manifest: ManifestHead) -> str:
    """Give the Parquet parts their final names, remove from the run directory everything the
    manifest does not list (the plan, the parts, temporary files of writes killed midway), then
    publish it."""
    run_dir = destination.incomplete_dir(manifest.run_id)
    if manifest.parquet:
        from flows.analyst import publish_parts  # pyarrow only for runs with Parquet

        publish_parts(destination, run_dir, manifest)  # before: the in-progress names are leftovers
    missing = incomplete_manifest(destination, manifest)
    if missing:  # never publish a snapshot that lacks what its manifest lists
        raise TerminalLoadError(
            f"run {manifest.run_id}: {len(missing)} file(s) its manifest lists are gone from "
            f"{destination.name} (first: {missing[0]}); run the same command again to write them"
        )
    leftovers = set(list_files(destination.fs, run_dir)) - manifest.listed_besides_files()
    for entry in read_entries(destination.fs, run_dir):
        leftovers.difference_update(entry_paths(entry))
    # Parts last: while any remain, a rerun can still tell this run's state.
    ordered = sorted(leftovers, key=lambda name: (name.startswith(PARTS_DIR + "/"), name))
    remove_files(destination.fs, run_dir, ordered)
    remove_empty_dirs(destination.fs, run_dir)
    return publish(destination, manifest.run_id)


def discard_manifest(destination: Destination, run_id: str) -> None:
    """Remove the written manifest of an unpublished run (back to state 1)."""
    remove_files(destination.fs, destination.incomplete_dir(run_id), [MANIFEST_NAME])


def pending_manifest(destination: Destination, run_id: str) -> ManifestHead | None:
    """The manifest head of a run killed after writing it but before publishing (state 2)."""
    path = posixpath.join(destination.incomplete_dir(run_id), MANIFEST_NAME)
    return _read_record(destination, path, ManifestHead)


_FINISHED_AT = re.compile(rb'"finished_at"\s*:\s*"([^"]+)"')


def apply_retention(
    destination: Destination, keep: int, *, current: str, now: datetime
) -> list[str]:
    """Delete all but the `keep` most recently finished snapshots (never `current`); returns
    the deleted run ids. Each deletion is recorded in `.deleted/<run>.json` first."""
    finished = {run: _finished_at(destination, run) for run in published_runs(destination)}
    newest_first = sorted(finished, key=lambda run: (finished[run], run), reverse=True)
    doomed = [run for run in newest_first[keep:] if run != current]
    for run in doomed:
        record = {
            "run_id": run,
            "finished_at": finished[run],
            "deleted_at": iso_timestamp(now),
            "deleted_by_run": current,
            "reason": f"retention: keep the {keep} newest snapshots",
        }
        delete_snapshot(destination, run, orjson.dumps(record, option=orjson.OPT_INDENT_2))
    return doomed


def _finished_at(destination: Destination, run_id: str) -> str:
    # Read only the head of the manifest: `finished_at` is among its first fields, and a
    # manifest of a million learners is large.
    path = posixpath.join(destination.snapshot_dir(run_id), MANIFEST_NAME)
    with destination.fs.open(path, "rb") as handle:
        head = handle.read(4096)
    found = _FINISHED_AT.search(head)
    return found.group(1).decode() if found else ""


_R = TypeVar("_R", RunPlan, ChunkPart, ManifestHead)


def _read_record(destination: Destination, path: str, model: type[_R]) -> _R | None:
    data = read_if_exists(destination.fs, path)
    if data is None:
        return None
    try:
        return model.model_validate_json(data)
    except ValidationError:
        raise TerminalLoadError(
            f"{destination.name}: {posixpath.basename(path)} of this run is not a valid "
            f"{model.__name__} record"
        ) from None
