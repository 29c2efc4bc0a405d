"""Restoring export documents into a database: the steps the `restore` command and the
`restore_learners` flow share. Plain functions, free of Prefect: a composition of `load` (reading
stored documents and snapshots, writing the target) and `transform` (the inverse builder), kept
here with the other compositions, not inside `load/`.

1. `plan_sources` turns the arguments (local paths or fsspec URLs) into documents to restore: a
   file is one document; a directory is a snapshot, whose manifest is read and whose every file
   is checked against its size and sha256 *before anything is written*. Files that fail are
   refused there.
2. `restore_source` restores one document in one transaction: read (decrypt, decompress), check
   the bytes against the manifest again (they are what gets written), parse, validate against the
   JSON Schema, turn into rows (`transform.restore_rows`), write (`load.restore_target`).
   It never raises for a problem of that one document: the `RestoreOutcome` says restored,
   skipped or refused, and why, naming the learner id and file, never personal content.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import orjson
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from extract.reader import read_learner
from load.codec import decode_stored, document_format
from load.destination import open_destination, read_if_exists, translated
from load.errors import LoadError
from load.manifest import FileEntry
from load.restore_target import (
    AlreadyInTarget,
    MissingParent,
    OnConflict,
    WriteResult,
    open_target,
    prepare_target,
    write_learner,
)
from load.snapshot_files import bytes_problem, file_problem, read_manifest
from transform.document import LESSON_CAP
from transform.restore_rows import DocumentRefused, RestoreRows, is_canonical, restore_rows


class Status(enum.StrEnum):
    RESTORED = "restored"
    SKIPPED = "skipped"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Source:
    """One document file to restore: `path` in the file system `fs`, `where` its printable name;
    `entry` is its manifest entry when it came from a snapshot."""

    fs: fsspec.AbstractFileSystem
    path: str
    where: str
    entry: FileEntry | None = None


@dataclass(frozen=True, slots=True)
class RestoreOutcome:
    """What became of one document (or of a whole snapshot whose manifest was refused).

    `subject` names it for people: "learner 3" when the id is known, else the file or snapshot.
    `reason` says why it was skipped or refused; `notes` what the user must know about a restored
    learner (truncation, placeholder parent, normalised JSON). Nothing in them is personal data.
    """

    status: Status
    subject: str
    where: str
    learner_id: int | None = None
    reason: str | None = None
    notes: tuple[str, ...] = ()
    lessons: int = 0
    achievements: int = 0
    replaced: bool = False
    placeholder_parent: int | None = None

    def line(self) -> str:
        """One printable line: what happened, to whom, from where, and why."""
        text = f"{self.status.value} {self.subject}"
        if not self.subject.endswith(self.where):  # "file X" / "snapshot X" name it already
            text += f" from {self.where}"
        if self.status is Status.RESTORED:
            text += f" ({self.lessons} lessons, {self.achievements} achievements)"
            if self.replaced:
                text += ", replacing the learner already in the target"
        if self.reason:
            text += f": {self.reason}"
        return text


@dataclass(slots=True)
class RestoreReport:
    """Every outcome of a restore run, in the order the documents were taken; `created_tables`
    when the run gave an empty target the contract's tables."""

    outcomes: list[RestoreOutcome] = field(default_factory=list)
    created_tables: bool = False

    def count(self, status: Status) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status is status)

    @property
    def refused(self) -> int:
        return self.count(Status.REFUSED)

    @property
    def new_learners_without_password(self) -> int:
        """Learners created by this run: they have no password (exports never hold one)."""
        return sum(1 for o in self.outcomes if o.status is Status.RESTORED and not o.replaced)

    def summary(self) -> str:
        return (
            f"{self.count(Status.RESTORED)} restored, {self.count(Status.SKIPPED)} skipped, "
            f"{self.refused} refused"
        )


def plan_sources(paths: Sequence[str | Path]) -> tuple[list[Source], list[RestoreOutcome]]:
    """The documents named by `paths` (local paths or fsspec URLs) and the refusals found before
    any write.

    A directory is a snapshot: its manifest is read and every listed file verified now (size and
    sha256), so a damaged snapshot is known before the target is touched. A file is a document
    whose name must say its format. A missing path, an unreadable manifest or a file that does not
    match its entry is refused here; everything else is returned, in argument/manifest order.
    """
    sources: list[Source] = []
    refused: list[RestoreOutcome] = []
    for argument in paths:
        where = str(argument) if "://" not in str(argument) else "a source URL"
        try:
            destination = open_destination(str(argument))
            fs, path = destination.fs, destination.root
            # A URL is shown as its protocol and path only: it may carry credentials.
            where = where if destination.is_local else destination.name
            with translated(fs, path, "reading"):
                is_dir, is_file = fs.isdir(path), fs.isfile(path)
            if is_dir:
                sources += _snapshot_sources(fs, path, where, refused)
                continue
        except LoadError as exc:
            refused.append(_refused(f"file {where}", where, str(exc)))
            continue
        if not is_file:
            refused.append(_refused(f"file {where}", where, "does not exist"))
        elif document_format(posixpath.basename(path)) is None:
            refused.append(
                _refused(
                    f"file {where}",
                    where,
                    "is neither a snapshot directory nor a document file "
                    "(.json, .json.gz, .json.zst, optionally .enc)",
                )
            )
        else:
            sources.append(Source(fs, path, where))
    return sources, refused


def _snapshot_sources(
    fs: fsspec.AbstractFileSystem, directory: str, where: str, refused: list[RestoreOutcome]
) -> list[Source]:
    """The documents of the snapshot in `directory` whose files match the manifest; the others,
    or the whole snapshot when its manifest cannot be trusted, are added to `refused`."""
    try:
        manifest = read_manifest(fs, directory, where)
    except LoadError as exc:
        refused.append(_refused(f"snapshot {where}", where, str(exc).removeprefix(f"{where}: ")))
        return []
    sources = []
    for entry in manifest.files:
        if document_format(posixpath.basename(entry.path)) is None:
            continue  # not a learner document: nothing to restore
        path = posixpath.join(directory, entry.path)
        shown = posixpath.join(where, entry.path)
        if problem := file_problem(fs, path, entry.bytes, entry.sha256):
            refused.append(
                _refused(f"learner {entry.learner_id}", shown, problem, entry.learner_id)
            )
        else:
            sources.append(Source(fs, path, shown, entry))
    return sources


def restore_paths(
    target_url: str,
    paths: Sequence[str | Path],
    *,
    fernet: Fernet | None,
    on_conflict: OnConflict,
    missing_parent: MissingParent,
    on_outcome: Callable[[RestoreOutcome], None] | None = None,
) -> RestoreReport:
    """Restore every document named by `paths` into the database at `target_url`.

    Order matters: first `plan_sources` (every snapshot verified), and only then is the target
    opened, given its tables if it has none, and written, one learner per transaction. When the plan
    leaves nothing to restore, the target is not touched at all. `on_outcome` sees each outcome as
    it happens (the plan's refusals first).
    """
    sources, refused = plan_sources(paths)
    report = RestoreReport()
    for outcome in refused:
        _record(report, outcome, on_outcome)
    if not sources:
        return report
    engine = open_target(target_url)
    try:
        report.created_tables = prepare_target(engine)
        for source in sources:
            outcome = restore_source(
                engine,
                source,
                fernet=fernet,
                on_conflict=on_conflict,
                missing_parent=missing_parent,
            )
            _record(report, outcome, on_outcome)
    finally:
        engine.dispose()
    return report


def _record(
    report: RestoreReport,
    outcome: RestoreOutcome,
    on_outcome: Callable[[RestoreOutcome], None] | None,
) -> None:
    report.outcomes.append(outcome)
    if on_outcome is not None:
        on_outcome(outcome)


def restore_source(
    engine: Engine,
    source: Source,
    *,
    fernet: Fernet | None,
    on_conflict: OnConflict,
    missing_parent: MissingParent,
) -> RestoreOutcome:
    """Restore one document into `engine`'s database, all or nothing; never raises for a problem
    of this document (see `RestoreOutcome`)."""
    entry = source.entry
    where = source.where
    subject = f"learner {entry.learner_id}" if entry else f"file {where}"
    learner_id = entry.learner_id if entry else None
    try:
        data = read_if_exists(source.fs, source.path)
        if data is None:
            return _refused(subject, where, "is missing", learner_id)
        if entry is not None and (problem := bytes_problem(data, entry.bytes, entry.sha256)):
            return _refused(subject, where, problem, learner_id)
        plain = decode_stored(where, data, fernet)
        try:
            document = orjson.loads(plain)
        except orjson.JSONDecodeError:
            return _refused(subject, where, "is not valid JSON (UTF-8)", learner_id)
        if entry is None and (claimed := _claimed_learner(document)) is not None:
            subject, learner_id = f"learner {claimed}", claimed
        rows = restore_rows(document)
        if entry is not None and entry.learner_id != rows.learner_id:
            return _refused(
                subject,
                where,
                f"the manifest lists learner {entry.learner_id} but the document holds "
                f"learner {rows.learner_id}",
                entry.learner_id,
            )
        try:
            written = write_learner(
                engine, rows, on_conflict=on_conflict, missing_parent=missing_parent
            )
        except AlreadyInTarget:
            if not identical_in_target(engine, document):
                raise
            # An earlier run of the same restore, interrupted, wrote it whole: done already.
            return RestoreOutcome(
                Status.SKIPPED, subject, where, learner_id,
                reason="already restored, identical to the document",
            )  # fmt: skip
    except DocumentRefused as exc:
        return _refused(subject, where, f"not restorable: {exc}", learner_id)
    except LoadError as exc:
        return _refused(subject, where, _without_prefix(str(exc), learner_id, where), learner_id)
    if not written.written:
        return RestoreOutcome(
            Status.SKIPPED,
            subject,
            where,
            learner_id,
            reason="already in the target (--on-conflict skip)",
        )
    return RestoreOutcome(
        Status.RESTORED,
        subject,
        where,
        learner_id,
        notes=_notes(rows, entry, canonical=is_canonical(plain, document), parent=written),
        lessons=len(rows.lessons),
        achievements=len(rows.achievements),
        replaced=written.replaced,
        placeholder_parent=written.placeholder_parent,
    )


def _notes(
    rows: RestoreRows, entry: FileEntry | None, *, canonical: bool, parent: WriteResult
) -> tuple[str, ...]:
    learner = f"learner {rows.learner_id}"
    notes = []
    lesson_count = len(rows.lessons)
    total = entry.lessons_total if entry else None
    if (entry and entry.truncated) or (total is not None and total > lesson_count):
        of_total = f" of its {total}" if total else ""
        notes.append(
            f"{learner} was truncated at export: the document holds the {lesson_count} most "
            f"recent{of_total} lessons, and only those are restored"
        )
    elif total is None and lesson_count >= LESSON_CAP:
        notes.append(
            f"{learner} was truncated at export if it had more than {LESSON_CAP} lessons: its "
            f"document holds the cap of {LESSON_CAP}, the most recent, and only those are "
            "restored"
        )
    placeholder = parent.placeholder_parent
    if placeholder is not None:
        notes.append(
            f"{learner}: its parent {placeholder} was not in the target; created a placeholder "
            "PARENT account holding only that id (no name, email or password)"
        )
    for pointer in rows.nulled_defaults:
        notes.append(
            f"{learner}: {pointer} was null in the document (unreadable in the source); "
            "restored as NULL, which a new export shows as its default value"
        )
    if not canonical:
        notes.append(
            f"{learner}: the file is not in the exporter's compact form; stored JSON values keep "
            "their content but are rewritten compactly, so a new export may differ in spacing"
        )
    return tuple(notes)


def _claimed_learner(document: object) -> int | None:
    """The learner id a document claims, read before it is validated (to name it in messages)."""
    learner = document.get("learner") if isinstance(document, dict) else None
    learner_id = learner.get("id") if isinstance(learner, dict) else None
    return learner_id if isinstance(learner_id, int) and not isinstance(learner_id, bool) else None


def _refused(
    subject: str, where: str, reason: str, learner_id: int | None = None
) -> RestoreOutcome:
    return RestoreOutcome(Status.REFUSED, subject, where, learner_id, reason=reason)


def _without_prefix(message: str, learner_id: int | None, where: str) -> str:
    """Errors from `load.restore_target` start with "learner N: ", and those of the decoder with
    the file's name; the outcome line says both already."""
    return message.removeprefix(f"learner {learner_id}: ").removeprefix(f"{where}: ")


def identical_in_target(engine: Engine, document: dict[str, object]) -> bool:
    """Whether the target already holds exactly this document's learner: the document the
    exporter builds from the target (with the same export date and exporter) equals it. Such a
    learner was restored by an earlier run of the same restore; restoring it again would change
    nothing, so a rerun after an interruption completes instead of refusing it."""
    from extract.engine import create_source_engine, snapshot
    from extract.errors import ExtractError
    from transform.document import build_document
    from transform.encoding import encode_document

    learner, stamp = document.get("learner"), document.get("exportDate")
    exported_by = document.get("exportedBy")
    if not isinstance(learner, dict) or not isinstance(stamp, str) or not stamp.endswith("Z"):
        return False
    try:
        export_date = datetime.fromisoformat(stamp[:-1]).replace(tzinfo=UTC)
    except ValueError:
        return False
    if exported_by is not None and not isinstance(exported_by, int):
        return False
    # Read as every export reads (a read-only engine passing stored JSON through as text).
    reader = create_source_engine(engine.url)
    try:
        with snapshot(reader) as conn:
            rows = read_learner(conn, int(learner["id"]), lesson_limit=LESSON_CAP)
    except (ExtractError, KeyError, TypeError, ValueError):
        return False
    finally:
        reader.dispose()
    built = build_document(rows, export_date=export_date, exported_by=exported_by)
    return bool(orjson.loads(encode_document(built.document)) == document)
