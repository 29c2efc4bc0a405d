"""The `restore` subcommand: export documents and snapshots back into a database.

`register` imports nothing heavy; `_run` imports the restore machinery when it runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from learner_export.arguments import PROG, UserError, add_command
from learner_export.settings import Settings

if TYPE_CHECKING:
    from flows.restore_steps import RestoreOutcome, RestoreReport

ON_CONFLICT = ("skip", "replace", "fail")
MISSING_PARENT = ("create", "fail")

RESET_NOTE = (
    "exports never hold passwords: the {count} learner account(s) this run created have none, "
    "and each must set one through the platform's password reset before signing in"
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `restore` to the command line."""
    restore = add_command(
        commands, "restore", _run, help="load export documents or snapshots back into a database"
    )
    restore.add_argument(
        "sources",
        nargs="+",
        metavar="FILE_OR_SNAPSHOT",
        help="a document file (learner-data-*.json[.gz|.zst][.enc]) or a snapshot directory, "
        "as a path or an fsspec URL",
    )
    restore.add_argument(
        "--database-url",
        metavar="URL",
        required=True,
        help="the database to restore into (required: never taken from $DATABASE_URL)",
    )
    restore.add_argument(
        "--on-conflict",
        choices=ON_CONFLICT,
        default="fail",
        help="when a learner (or any of its ids) is already in the target: fail refuses it "
        "(default), skip leaves the target as it is, replace makes it hold exactly the document "
        "(keeping the account's password)",
    )
    restore.add_argument(
        "--missing-parent",
        choices=MISSING_PARENT,
        default="create",
        help="when the learner's parent is not in the target: create adds a placeholder PARENT "
        "account holding only its id (default), fail refuses the learner",
    )


def _run(args: argparse.Namespace, settings: Settings) -> None:
    """Write the learner, profile, lessons and achievements of each document into the database at
    --database-url (its tables are created if it has none). A directory is a snapshot: its
    manifest.json is read and every file's sha256 checked before anything is written. Plain, .gz,
    .zst and encrypted (.enc, key from LEARNER_EXPORT_ENCRYPTION_KEY) documents are read. Each
    learner is written in its own transaction: a learner that cannot be restored faithfully is
    refused, with nothing written for it. Exit status 1 when anything was refused."""
    from extract.engine import describe
    from flows.restore_steps import restore_paths
    from load.codec import configured_fernet
    from load.restore_target import MissingParent, OnConflict

    report = restore_paths(
        args.database_url,
        args.sources,
        fernet=configured_fernet(settings.encryption_key),
        on_conflict=OnConflict(args.on_conflict),
        missing_parent=MissingParent(args.missing_parent),
        on_outcome=_print_outcome,
    )
    if report.created_tables:
        print(f"created the contract's tables in {describe(args.database_url)}")
    _print_summary(report)
    if report.refused:
        raise UserError(f"{report.refused} refused; nothing was written for them (see above)")


def _print_outcome(outcome: RestoreOutcome) -> None:
    from flows.restore_steps import Status

    stream = sys.stderr if outcome.status is Status.REFUSED else sys.stdout
    print(outcome.line(), file=stream)
    for note in outcome.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)


def _print_summary(report: RestoreReport) -> None:
    print(f"summary: {report.summary()}")
    if report.new_learners_without_password:
        note = RESET_NOTE.format(count=report.new_learners_without_password)
        print(f"{PROG}: note: {note}", file=sys.stderr)
