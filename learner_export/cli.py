"""The `learner-export` command.

Each subcommand imports what it needs when it runs, so `export` starts fast: it never imports
Prefect (only the flow commands do). Expected failures print one line on stderr and exit 1;
nothing a user can cause prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from learner_export.arguments import (
    PROG,
    UserError,
    add_command,
    add_database_option,
    positive_int,
    say_what_was_left,
)
from learner_export.settings import Settings, get_settings

COMMAND_MODULES: tuple[str, ...] = (
    "learner_export.commands_archive",
    "learner_export.commands_report",
    "learner_export.commands_restore",
    "learner_export.commands_serve",
)
"""Modules adding subcommands: each has `register(subparsers)`, which must import nothing heavy
(the run function imports what it needs), so `--help` and `export` stay fast."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export learners' data from the learning platform's database.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = add_command(
        commands,
        "demo-db",
        _run_demo_db,
        help="create the demo database (embedded SQLite by default)",
    )
    demo.add_argument("--learners", type=positive_int, default=12, help="learners (default 12)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--replace", action="store_true", help="drop and rebuild the tables if they already exist"
    )
    add_database_option(demo)

    export = add_command(
        commands,
        "export",
        _run_export,
        help="export one learner's document (and/or readable page), or a family's bundle",
    )
    export.add_argument("learner_id", type=positive_int, metavar="LEARNER_ID", nargs="?")
    export.add_argument(
        "--parent",
        type=positive_int,
        metavar="ID",
        help="instead of one learner: all children of this parent in one zip (documents, pages, "
        "notice.json, manifest.json)",
    )
    export.add_argument(
        "--format",
        choices=("json", "html", "both"),
        default="json",
        help="json: the document (default); html: the readable page; both: the two side by side",
    )
    export.add_argument(
        "--out", type=Path, default=Path(), help="directory to write to (default: current)"
    )
    export.add_argument(
        "--exported-by",
        type=positive_int,
        metavar="ID",
        help="user id recorded as exportedBy (default: $LEARNER_EXPORT_EXPORTED_BY, else null)",
    )
    add_database_option(export)

    indexes = add_command(
        commands,
        "indexes",
        _run_indexes,
        help="print the CREATE INDEX statements the source lacks for fast exports (runs nothing)",
    )
    indexes.add_argument(
        "--all", action="store_true", help="print every needed index, not only the missing ones"
    )
    add_database_option(indexes)

    coverage = add_command(
        commands,
        "coverage",
        _run_coverage,
        help="list the source's learner-linked tables and columns: exported where, or excluded "
        "why (exit 1 when one has no decision in the registry)",
    )
    add_database_option(coverage)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


def _source_url(args: argparse.Namespace, settings: Settings) -> str:
    return str(args.database_url or settings.source_url)


def _run_demo_db(args: argparse.Namespace, settings: Settings) -> None:
    """Create the contract's tables and fill them with deterministic demo data: the same --learners
    and --seed give the same rows and ids on SQLite and PostgreSQL."""
    from extract.engine import describe
    from learner_export.demo import DemoDatabaseExists, build_demo_database

    url = _source_url(args, settings)
    try:
        rows = build_demo_database(
            url, learners=args.learners, seed=args.seed, replace=args.replace
        )
    except DemoDatabaseExists as exc:
        raise UserError(str(exc)) from None
    print(
        f"demo database ready at {describe(url)}: {len(rows.users)} users, "
        f"{len(rows.learner_ids)} learners (ids {rows.learner_ids[0]}..{rows.learner_ids[-1]}), "
        f"{len(rows.lessons)} lessons, {len(rows.achievements)} achievements"
    )


def _run_indexes(args: argparse.Namespace, settings: Settings) -> None:
    """Print the CREATE INDEX statements of the indexes an export needs (lessons, achievements
    and learner_profiles, by learner) that the source lacks. Nothing is run: the exporter only
    reads. Without them every export scans those tables whole. On PostgreSQL the statements use
    CONCURRENTLY (writes go on meanwhile), which cannot run inside a transaction: run them one by
    one, e.g. `learner-export indexes | psql "$OWNER_URL"` (psql runs each line on its own)."""
    from extract.engine import create_source_engine, snapshot
    from extract.indexes import NEEDED_INDEXES, missing_indexes

    engine = create_source_engine(_source_url(args, settings))
    try:
        with snapshot(engine) as conn:
            needed = list(NEEDED_INDEXES) if args.all else missing_indexes(conn)
            dialect = conn.dialect.name
    finally:
        engine.dispose()
    if not needed:
        print("-- the source has every index the export needs")
    for index in needed:
        print(index.create_statement(dialect))


def _run_export(args: argparse.Namespace, settings: Settings) -> None:
    """Write learner-data-{id}-{YYYY-MM-DD}.json (and/or .html) for one learner, or a family's
    bundle with --parent, and print the paths."""
    if (args.parent is None) == (args.learner_id is None):
        raise UserError("give either a LEARNER_ID or --parent ID (not both)")
    if args.parent is not None:
        if args.format != "json":
            raise UserError("--format does not apply to --parent: the bundle holds both")
        from learner_export.commands_readable import export_family

        export_family(args, settings, _source_url(args, settings))
        return
    if args.format != "json":
        from learner_export.commands_readable import export_readable

        export_readable(args, settings, _source_url(args, settings))
        return
    # The same function as the export-learner flow's task, called without Prefect.
    from flows.chunk import ChunkJob, export_one
    from load.audit import append_audit, written_record
    from transform.values import Problem

    export_date = datetime.now(UTC)
    exported_by = args.exported_by or settings.exported_by
    job = ChunkJob(
        destination_url=str(args.out.resolve()),
        run_id="single",
        source_url=_source_url(args, settings),
        export_date=export_date,
        exported_by=exported_by,
        compress=None,
        encryption_key=None,
        parquet=False,
        pseudonym_key=None,
    )
    entry = export_one(job, args.learner_id)
    append_audit(
        settings.audit_log_path,
        written_record(at=export_date, via="cli", user_id=exported_by, entry=entry),
    )
    say_what_was_left(
        entry.learner_id,
        [Problem(**nulled.model_dump()) for nulled in entry.problems],
        truncated=entry.truncated,
        lessons_total=entry.lessons_total,
        lessons_exported=entry.lessons_exported,
    )
    print(args.out.resolve() / entry.path)


def _run_coverage(args: argparse.Namespace, settings: Settings) -> None:
    """Print every learner-linked column of the source with its registry decision; exit 1 when
    one has none."""
    from learner_export.commands_readable import run_coverage

    if not run_coverage(_source_url(args, settings)):
        raise UserError(
            "learner-linked columns above have no decision: add each to "
            "extract/coverage_registry.toml, as exported (where) or excluded (why)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from flows.interrupt import INTERRUPTED_LINE, handle_stop_signals

    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Settings], None] = args.run
    handle_stop_signals()  # SIGTERM ends a command as Ctrl-C does: one line, status 130
    try:
        run(args, get_settings())
    except KeyboardInterrupt:
        print(f"{PROG}: {INTERRUPTED_LINE}", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_expected(exc):
            raise
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _is_expected(exc: Exception) -> bool:
    """Errors whose message is written for the user (and holds no personal data)."""
    from pydantic import ValidationError

    from extract.errors import ExtractError
    from load.errors import LoadError

    return isinstance(exc, UserError | ExtractError | LoadError | ValidationError)


if __name__ == "__main__":
    sys.exit(main())
