"""What every subcommand shares: the program's name, the user error, argument types, and the
warning about missing indexes.

Its own module so that `cli` and the command modules it loads import it, never each other.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from learner_export.settings import Settings

PROG = "learner-export"


class UserError(Exception):
    """A failure the user can act on: printed as one line, exit code 1."""


def warn_of_missing_indexes(url: str) -> None:
    """Print one warning line on stderr when the source at `url` lacks an index the exports need
    (`extract.indexes`); said when `serve` and `archive` start."""
    from extract.indexes import missing_index_warning

    if warning := missing_index_warning(url):
        print(f"{PROG}: warning: {warning}", file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    """A plain positive decimal integer: ASCII digits only, no sign, space or leading zero."""
    if not text.isascii() or not text.isdigit() or text.startswith("0"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def learner_list(text: str) -> list[int]:
    """A comma-separated list of learner ids (`3,4,5`)."""
    try:
        return [positive_int(part.strip()) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of learner ids"
        ) from None


def add_database_option(parser: argparse.ArgumentParser) -> None:
    """`--database-url`: the source database, defaulting to the settings' source."""
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="source database (default: $DATABASE_URL, else the embedded demo database)",
    )


Run = Callable[[argparse.Namespace, "Settings"], None]


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Run,
    *,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Add subcommand `name`, run by `run`; `help` is its line in `learner-export --help`. Its
    description is `run`'s docstring, written for users (one home for what the command does),
    unless another is given."""
    description = description or inspect.cleandoc(run.__doc__ or "") or None
    parser = commands.add_parser(name, help=help, description=description)
    parser.set_defaults(run=run)
    return parser


def say_what_was_left(
    learner_id: int,
    problems: Iterable[object],
    *,
    truncated: bool,
    lessons_total: int,
    lessons_exported: int,
) -> None:
    """What `export` says on stderr of one learner's document: each value exported as null (a
    problem names the place, never the value) and, when truncated, how many lessons it holds."""
    for problem in problems:
        print(f"{PROG}: warning: learner {learner_id}: {problem}", file=sys.stderr)
    if truncated:
        print(
            f"{PROG}: note: learner {learner_id} has {lessons_total} lessons; "
            f"the document holds the {lessons_exported} most recent",
            file=sys.stderr,
        )
