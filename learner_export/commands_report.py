"""The `report` subcommand: one self-contained HTML page of plots from a snapshot's analyst
tables, small cells suppressed. It reads the snapshot only (never the source), and does not
load Prefect."""

from __future__ import annotations

import argparse
from pathlib import Path

from learner_export.arguments import PROG, UserError, add_command, positive_int
from learner_export.settings import Settings

DEFAULT_MIN_CELL = 5
"""Must equal transform.report_figures.DEFAULT_MIN_CELL (a test says so); repeated here so that
`--help` does not import pandas."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = add_command(
        commands,
        "report",
        run_report,
        help="write a snapshot's analyst report: one offline HTML page of plots",
    )
    report.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot directory or URL")
    report.add_argument(
        "--compare",
        metavar="OTHER_SNAPSHOT",
        help="another snapshot (directory or URL): its headline figures beside these",
    )
    report.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="the HTML file to write (default: report-<run id>.html in the current directory)",
    )
    report.add_argument(
        "--min-cell",
        type=positive_int,
        default=DEFAULT_MIN_CELL,
        metavar="N",
        help=f"suppress every figure behind fewer than N learners (default {DEFAULT_MIN_CELL})",
    )


def run_report(args: argparse.Namespace, settings: Settings) -> None:
    """Write one HTML page of tables and plots of a snapshot's analyst tables (a local path or
    any fsspec URL, documents plain, compressed or encrypted alike): the snapshot in numbers,
    scores by subject and grade, lessons completed per week, the hardest topics, the
    most-missed questions and weakest concepts, achievements per week; with --compare, the
    headline figures of another snapshot beside them. Every figure behind fewer than --min-cell
    learners is shown as "fewer than N learners". The page needs no network to open. A
    snapshot without its manifest (unfinished), or whose tables do not match it, is refused."""
    from flows.report import snapshot_report
    from load.destination import open_snapshot
    from load.errors import LoadError
    from load.files import write_atomic

    fs, directory = open_snapshot(args.snapshot)
    before = None
    if args.compare:
        other_fs, other_dir = open_snapshot(args.compare)
        before = (other_fs, other_dir, args.compare)
    try:
        page, manifest = snapshot_report(
            fs, directory, name=args.snapshot, min_cell=args.min_cell, before=before
        )
    except LoadError as exc:
        raise UserError(
            f"{exc}; nothing was written (`{PROG} verify` lists every mismatch of a snapshot)"
        ) from None
    out: Path = args.out or Path(f"report-{manifest.run_id}.html")
    out = out.expanduser().resolve()
    written = write_atomic(out.parent, out.name, page)
    print(written.path)
