"""What a command checks before Prefect starts, so that a run that cannot work fails in well
under a second with one line, instead of after the seconds Prefect takes to start and with its
traceback: the keys the options need, the run id and its identity on the destination, that the
destination takes files, that no other process is writing the run, and that the source is
reachable and holds what the export reads.

The flow checks the same again when it runs (a scheduled run has no command in front of it):
these checks only make the common mistakes fast. No Prefect here.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import SecretStr

from extract.source_check import check_source
from flows import run
from flows.options import (
    ArchiveOptions,
    ArchiveSecrets,
    check_options,
    default_run_id,
    run_parameters,
)
from load.destination import check_run_id, check_writable, open_destination
from load.run_lock import check_unlocked


def check_archive(options: ArchiveOptions, secrets: ArchiveSecrets, *, now: datetime) -> str:
    """Check an archive run of `options` as far as it can be checked here; returns its run id.
    Raises the stage's own one-line errors (ArchiveError, LoadError, ExtractError)."""
    check_options(
        options,
        encryption_key=_revealed(secrets.encryption_key),
        pseudonym_key=_revealed(secrets.pseudonym_key),
    )
    run_id = check_run_id(options.run_id or default_run_id(options.learners, now))
    destination = open_destination(options.dest)
    existing = run.existing_run(destination, run_id)
    if existing is not None:
        state, parameters = existing
        run.check_identity(
            destination,
            run_id,
            parameters,
            run_parameters(options),
            finished=state != "started",
        )
        if state == "published":
            return run_id  # nothing to write and nothing to read: the rerun only checks
    check_writable(destination)
    check_unlocked(destination, run_id)
    check_source(secrets.source_url.get_secret_value())
    return run_id


def check_schedule(options: ArchiveOptions, secrets: ArchiveSecrets) -> None:
    """Check what every scheduled run will need: keys, destination, source."""
    check_options(
        options,
        encryption_key=_revealed(secrets.encryption_key),
        pseudonym_key=_revealed(secrets.pseudonym_key),
    )
    if options.run_id is not None:
        check_run_id(options.run_id)
    check_writable(open_destination(options.dest))
    check_source(secrets.source_url.get_secret_value())


def _revealed(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
