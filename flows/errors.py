"""Errors of an archive run as a whole. Messages hold ids, counts and options, never content."""

from __future__ import annotations


class ArchiveError(Exception):
    """Base class: the run cannot go on, for a reason the user can act on."""


class OptionUnavailable(ArchiveError):
    """An option cannot work here: its key is not configured, or its module is missing."""


class RunMismatch(ArchiveError):
    """An unfinished run of this id was started with other options."""


class RunFailed(ArchiveError):
    """Some learners could not be exported and failures were not tolerated; nothing published."""

    def __init__(self, run_id: str, failed: list[int]) -> None:
        shown = ", ".join(str(i) for i in failed[:20]) + (", ..." if len(failed) > 20 else "")
        super().__init__(
            f"run {run_id}: {len(failed)} learner(s) could not be exported (ids {shown}); "
            "the snapshot was not published. Run the same command again to retry them, "
            "or add --tolerate-failures to publish without them"
        )
        self.run_id = run_id
        self.failed = failed
