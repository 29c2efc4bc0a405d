"""Cron expressions of the schedule: checked before anything starts, and the next firings shown.

Standard five-field cron (minute hour day-of-month month day-of-week), evaluated in UTC. A sixth
field is refused rather than guessed at: some tools read it as seconds (so `0 2 * * * *` would fire
every second of a minute), others as years.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from cronsim import CronSim, CronSimError

from flows.errors import ArchiveError


class BadCron(ArchiveError):
    """The cron expression is not one the schedule can run."""


def check_cron(expression: str) -> str:
    """`expression` if it is a valid five-field cron expression, else BadCron saying why."""
    fields = expression.split()
    if len(fields) != 5:
        raise BadCron(
            f"--cron {expression!r} has {len(fields)} fields; give the five of standard cron: "
            "minute hour day-of-month month day-of-week (UTC), e.g. '0 2 * * *'"
        )
    try:
        next(iter(CronSim(" ".join(fields), datetime(2000, 1, 1, tzinfo=UTC))))
    except (CronSimError, StopIteration) as exc:
        reason = str(exc).rstrip(".") or "it never fires"
        raise BadCron(f"--cron {expression!r} is not a valid cron expression ({reason})") from None
    return " ".join(fields)


def next_runs(expression: str, after: datetime, count: int = 3) -> list[datetime]:
    """The next `count` firings of `expression` strictly after `after`, in UTC."""
    start = after.astimezone(UTC).replace(microsecond=0)
    return list(itertools.islice(CronSim(check_cron(expression), start), count))
