"""Errors of an archive run as a whole. Messages hold ids, counts and options, never content."""

from __future__ import annotations

import logging

from extract.errors import ExtractError
from load.errors import LoadError


class ArchiveError(Exception):
    """Base class: the run cannot go on, for a reason the user can act on."""


class OptionUnavailable(ArchiveError):
    """An option cannot work here: its key is not configured, or its module is missing."""


class RunMismatch(ArchiveError):
    """An unfinished run of this id was started with other options."""


class RunFailed(ArchiveError):
    """Some learners could not be exported and failures were not tolerated; nothing published."""

    def __init__(self, run_id: str, failed: list[int], first_error: str | None = None) -> None:
        shown = ", ".join(str(i) for i in failed[:20]) + (", ..." if len(failed) > 20 else "")
        why = f" (first error: {first_error})" if first_error else ""
        super().__init__(
            f"run {run_id}: {len(failed)} learner(s) could not be exported (ids {shown}){why}; "
            "the snapshot was not published. Run the same command again to retry them, "
            "or add --tolerate-failures to publish without them"
        )
        self.run_id = run_id
        self.failed = failed


class ClusterLost(ArchiveError):
    """The chunk tasks' Dask scheduler stopped answering mid-run; finished chunks are kept."""

    def __init__(self, address: str, error: BaseException, finished: int, chunks: int) -> None:
        super().__init__(
            f"the Dask scheduler at {address} stopped answering mid-run "
            f"({type(error).__name__}); the chunks finished so far are kept ({finished} of "
            f"{chunks} confirmed). Run the same command again, once a scheduler answers (at "
            "this address or another --dask-address), to do the rest"
        )


def error_text(error: object) -> str:
    """What a run records and logs of an error: the message of our own errors (written to name no
    content), otherwise only the exception's type, since its message might quote data."""
    if isinstance(error, LoadError | ExtractError):
        return str(error)
    return f"unexpected {type(error).__name__} (a bug in the exporter)"


EXPECTED_ERRORS = (ArchiveError, ExtractError, LoadError)
"""Errors written for the user: their message says what to do, a traceback adds only noise."""


class _NoTracebackForExpectedErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], EXPECTED_ERRORS):
            record.exc_info = None
            record.exc_text = None
        return True


_QUIET = _NoTracebackForExpectedErrors()


def quiet_expected_tracebacks() -> None:
    """Keep the tracebacks of expected errors out of every log handler configured now (Prefect's
    console and API handlers): a run refused for a reason the user can act on logs its one-line
    message, not 80 lines of Prefect's engine. Unexpected errors keep their tracebacks."""
    quiet = _QUIET
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if quiet not in handler.filters:
                handler.addFilter(quiet)
