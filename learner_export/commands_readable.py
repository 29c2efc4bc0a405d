"""The readable side of `learner-export`: `export --format html|both`, `export --parent ID` and
`coverage`. Called by `learner_export.cli`, which imports this module only when one of them runs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import UTC, datetime

from extract.coverage import load_registry, source_coverage
from extract.engine import create_source_engine, describe, snapshot
from extract.reader import read_family, read_learner
from learner_export.arguments import UserError, say_what_was_left
from learner_export.bundle import family_bundle, page_bytes
from learner_export.notice_config import operator_notice
from learner_export.settings import Settings
from load.audit import AuditRecord, append_audit
from load.files import AtomicBatch, write_atomic
from load.names import document_filename, family_filename, page_filename
from load.zip_stream import iter_zip
from transform.document import LESSON_CAP, BuiltDocument, build_document
from transform.encoding import encode_document


def export_readable(args: argparse.Namespace, settings: Settings, source_url: str) -> None:
    """`export ID --format html|both`: the page (and the document) from one read and one build,
    written together (both files or neither); one audit line with the document's sha256."""
    operator = operator_notice(settings)  # a bad configuration fails before any read
    export_date = datetime.now(UTC)
    exported_by = args.exported_by or settings.exported_by
    engine = create_source_engine(source_url)
    try:
        with snapshot(engine) as conn:
            rows = read_learner(conn, args.learner_id, lesson_limit=LESSON_CAP)
    finally:
        engine.dispose()
    built = build_document(rows, export_date=export_date, exported_by=exported_by)
    data = encode_document(built.document)
    out = args.out.resolve()
    written = []
    with AtomicBatch(out) as batch:
        if args.format == "both":
            written.append(batch.add(document_filename(built.learner_id, export_date), data))
        page = page_bytes(built.document, operator)
        written.append(batch.add(page_filename(built.learner_id, export_date), page))
    append_audit(settings.audit_log_path, cli_record(built, data, export_date, exported_by))
    report(built)
    for file in written:
        print(file.path)


def export_family(args: argparse.Namespace, settings: Settings, source_url: str) -> None:
    """`export --parent ID`: every child's document and page, notice.json and manifest.json in
    one zip, all read in one snapshot; one audit line per child. A parent with no children (or
    an id that is no parent) is an error."""
    operator = operator_notice(settings)
    export_date = datetime.now(UTC)
    exported_by = args.exported_by or settings.exported_by
    engine = create_source_engine(source_url)
    try:
        with snapshot(engine) as conn:
            family = read_family(conn, args.parent, lesson_limit=LESSON_CAP)
    finally:
        engine.dispose()
    if not family:
        raise UserError(f"user {args.parent} has no children on record: nothing to export")
    children = [build_document(r, export_date=export_date, exported_by=exported_by) for r in family]
    bundle = family_bundle(args.parent, children, operator, export_date=export_date)
    archive = b"".join(iter_zip(((m.name, m.data) for m in bundle.members), modified=export_date))
    written = write_atomic(args.out.resolve(), family_filename(args.parent, export_date), archive)
    for built, member in zip(children, bundle.documents(), strict=True):
        append_audit(
            settings.audit_log_path, cli_record(built, member.data, export_date, exported_by)
        )
        report(built)
    print(written.path)


def run_coverage(source_url: str) -> bool:
    """Print the coverage of the source's learner-linked columns, one per line, then a count;
    True when every one has a registry decision."""
    registry = load_registry()
    engine = create_source_engine(source_url)
    try:
        with snapshot(engine) as conn:
            found = source_coverage(conn, registry)
    finally:
        engine.dispose()
    width = max((len(c.table) + len(c.column) + 1 for c in found), default=0)
    for column in found:
        where = f"{column.table}.{column.column}"
        print(f"{where:<{width}}  {column.verdict:<8}  {column.detail}")
    unknown = [c for c in found if c.verdict == "unknown"]
    tables = len({c.table for c in found})
    print(
        f"{describe(source_url)}: {tables} learner-linked tables, {len(found)} columns: "
        f"{sum(c.verdict == 'exported' for c in found)} exported, "
        f"{sum(c.verdict == 'excluded' for c in found)} excluded, {len(unknown)} unknown",
        file=sys.stderr,
    )
    return not unknown


def cli_record(built: BuiltDocument, data: bytes, at: datetime, user_id: int | None) -> AuditRecord:
    """The audit line of one document the CLI wrote: its JSON bytes' sha256 and size."""
    return AuditRecord(
        at=at, via="cli", user_id=user_id, learner_id=built.learner_id, status=200,
        sha256=hashlib.sha256(data).hexdigest(), size=len(data), complete=True,
        lessons_exported=built.lessons_exported, lessons_total=built.lessons_total,
    )  # fmt: skip


def report(built: BuiltDocument) -> None:
    """What `export` says on stderr about a document: values exported as null, truncation."""
    say_what_was_left(
        built.learner_id,
        built.problems,
        truncated=built.truncated,
        lessons_total=built.lessons_total,
        lessons_exported=built.lessons_exported,
    )
