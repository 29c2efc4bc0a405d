"""The `restore_learners` flow: a whole snapshot back into a database.

A recipe over `flows.restore_steps`: verify the snapshot (manifest read, every file's size and
sha256 checked before anything is written), make sure the target has the tables, then restore each
document in its own transaction. The run fails at the end, after restoring what it could, when
anything was refused; its log lists each outcome (learner ids and file names, never content).

No retries: a refusal is a verdict on the data, and a restore under `--on-conflict fail` is not
idempotent. Tasks take no cache (their inputs include an engine and a key, nothing to hash or
keep).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from flows.restore_steps import (
    RestoreOutcome,
    RestoreReport,
    Source,
    Status,
    plan_sources,
    restore_source,
)
from learner_export.settings import get_settings
from load.codec import configured_fernet
from load.restore_target import MissingParent, OnConflict, open_target, prepare_target


class RestoreIncomplete(RuntimeError):
    """Some learners of the snapshot were refused; the others were restored."""


@task(cache_policy=NO_CACHE)
def plan_restore(snapshot: Path) -> tuple[list[Source], list[RestoreOutcome]]:
    """Read the manifest and check every listed file; the documents to restore and the refusals."""
    return plan_sources([snapshot])


@task(cache_policy=NO_CACHE)
def prepare_target_tables(engine: Engine) -> bool:
    """Create the contract's tables in an empty target; True if it did."""
    return prepare_target(engine)


restore_document = task(name="restore-document", cache_policy=NO_CACHE)(restore_source)
"""One learner, one transaction; refusals come back as a RestoreOutcome, never raised."""


@flow(name="restore-learners")
def restore_learners(
    snapshot: Path,
    database_url: SecretStr,
    on_conflict: OnConflict = OnConflict.FAIL,
    missing_parent: MissingParent = MissingParent.CREATE,
) -> dict[str, int]:
    """Restore every learner of `snapshot` into the database at `database_url`.

    `database_url` is a secret parameter, so Prefect records it masked. Returns the counts of
    restored, skipped and refused learners; raises `RestoreIncomplete` (after restoring the
    others) when any was refused.
    """
    logger = get_run_logger()
    fernet = configured_fernet(get_settings().encryption_key)
    sources, refused = plan_restore(snapshot)
    report = RestoreReport(outcomes=list(refused))
    # As in `flows.restore_steps.restore_paths`: the target is touched only after the check.
    if sources:
        engine = open_target(database_url.get_secret_value())
        try:
            report.created_tables = prepare_target_tables(engine)
            for source in sources:
                report.outcomes.append(
                    restore_document(
                        engine,
                        source,
                        fernet=fernet,
                        on_conflict=on_conflict,
                        missing_parent=missing_parent,
                    )
                )
        finally:
            engine.dispose()
    if report.created_tables:
        logger.info("created the contract's tables in the target")
    for outcome in report.outcomes:
        log = logger.warning if outcome.status is Status.REFUSED else logger.info
        log(outcome.line())
        for note in outcome.notes:
            logger.info(note)
    if report.new_learners_without_password:
        logger.info(
            "%d restored learner account(s) have no password (exports never hold one): each "
            "must set one through the platform's password reset",
            report.new_learners_without_password,
        )
    counts = {status.value: report.count(status) for status in Status}
    if report.refused:
        raise RestoreIncomplete(f"snapshot {snapshot}: {report.summary()}")
    return counts
