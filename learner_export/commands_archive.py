"""Subcommands of the archival job: `archive`, `verify`, `decrypt`, `schedule` and `deploy`.

`archive` and `schedule` run Prefect flows; `deploy` registers one on a work pool. Prefect is
configured before it is first imported, through its own environment variables and only where the
user has not set them: its home under the data dir (a fresh machine gets no ~/.prefect), no
analytics, and a temporary local server when no PREFECT_API_URL is configured.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.options import DEFAULT_CHUNK_SIZE, DEFAULT_WORKERS
from learner_export.arguments import (
    PROG,
    UserError,
    add_command,
    add_database_option,
    learner_list,
    positive_int,
    warn_of_missing_indexes,
)
from learner_export.settings import Settings

if TYPE_CHECKING:
    from flows.options import ArchiveOptions

DEFAULT_DEST = Path("snapshots")
DEFAULT_CRON = "0 2 * * *"
"""Nightly at 02:00 UTC (the deployment's schedule is in UTC, whatever the machine's zone)."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    archive = add_command(
        commands,
        "archive",
        run_archive,
        help="archive every learner (or --learners) into one snapshot",
    )
    _add_archive_options(archive)
    archive.add_argument(
        "--run-id",
        metavar="ID",
        help="snapshot name (default: the UTC date, YYYY-MM-DD, for every learner; with "
        "--learners, the date and a digest of the ids)",
    )
    archive.add_argument(
        "--dask-address",
        metavar="URL",
        help="run the chunk tasks on this Dask scheduler (tcp://host:8786)",
    )
    archive.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"chunks exported at once, in threads (default {DEFAULT_WORKERS}; ignored with "
        "--dask-address)",
    )
    add_database_option(archive)

    abandon = add_command(
        commands,
        "abandon",
        run_abandon,
        help="drop an unfinished archive run (its partial files), so its run id can start afresh",
    )
    abandon.add_argument("run_id", metavar="RUN_ID", help="the unfinished run's id")
    abandon.add_argument(
        "--dest",
        default=str(DEFAULT_DEST),
        metavar="URL",
        help="directory or fsspec URL of the snapshots (default: ./snapshots)",
    )

    verify = add_command(
        commands, "verify", run_verify, help="re-check a snapshot against its manifest"
    )
    verify.add_argument("snapshot", metavar="SNAPSHOT", help="snapshot directory or URL")

    decrypt = add_command(
        commands, "decrypt", run_decrypt, help="decrypt (and decompress) an archived document"
    )
    decrypt.add_argument("file", metavar="FILE", help="a .json.enc/.json.gz/.json.zst file")
    decrypt.add_argument(
        "--out", type=Path, default=Path(), help="directory to write to (default: current)"
    )

    schedule = add_command(
        commands,
        "schedule",
        run_schedule,
        help="serve the archive as a Prefect deployment on a cron schedule",
    )
    _add_archive_options(schedule)
    schedule.add_argument(
        "--cron", default=DEFAULT_CRON, help=f"cron expression, UTC (default {DEFAULT_CRON!r})"
    )
    schedule.add_argument("--name", default="nightly", help="deployment name (default nightly)")

    deploy = add_command(
        commands,
        "deploy",
        run_deploy,
        help="register the scheduled archive on a Prefect work pool, for its workers to run",
    )
    _add_archive_options(deploy)
    deploy.add_argument(
        "--cron", default=DEFAULT_CRON, help=f"cron expression, UTC (default {DEFAULT_CRON!r})"
    )
    deploy.add_argument("--name", default="nightly", help="deployment name (default nightly)")
    deploy.add_argument(
        "--pool", required=True, help="the work pool (e.g. one made with `prefect work-pool "
        "create archive --type process`)",
    )  # fmt: skip
    deploy.add_argument(
        "--dask-address",
        metavar="URL",
        help="run each run's chunk tasks on this Dask scheduler (tcp://host:8786), checked at "
        "the start of every run (default: in threads of the Prefect worker's run)",
    )


def _add_archive_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dest",
        default=str(DEFAULT_DEST),
        metavar="URL",
        help="directory or fsspec URL (s3://bucket/prefix, memory://x) (default: ./snapshots)",
    )
    parser.add_argument(
        "--learners", type=learner_list, metavar="1,2,3", help="only these learner ids"
    )
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        metavar="N",
        help=f"learners per chunk task (default {DEFAULT_CHUNK_SIZE})",
    )
    parser.add_argument("--compress", choices=["gzip", "zstd"], help="compress each document")
    parser.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt each document (Fernet) with LEARNER_EXPORT_ENCRYPTION_KEY; the Parquet "
        "tables are not encrypted (see --no-parquet)",
    )
    parser.add_argument(
        "--exported-by",
        type=positive_int,
        metavar="ID",
        help="user id recorded as exportedBy (default: $LEARNER_EXPORT_EXPORTED_BY, else null)",
    )
    parser.add_argument(
        "--parquet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write the Parquet tables for analysts (default: yes)",
    )
    parser.add_argument(
        "--html",
        action="store_true",
        help="also write each learner's readable page (learner-data-{id}-{date}.html) beside its "
        "document, in the manifest and checked by verify",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write the analyst report (report.html: plots of the Parquet tables, small "
        "cells suppressed) into the snapshot, listed in its manifest",
    )
    parser.add_argument(
        "--tolerate-failures",
        action="store_true",
        help="publish the snapshot even if some learners could not be exported",
    )
    parser.add_argument(
        "--keep", type=positive_int, metavar="N", help="then delete all but the N newest snapshots"
    )


def _options(args: argparse.Namespace, settings: Settings) -> ArchiveOptions:
    from flows.options import ArchiveOptions

    dest = str(args.dest)
    if "://" not in dest:  # a local path: absolute, so workers elsewhere write the same place
        dest = str(Path(dest).expanduser().resolve())
    return ArchiveOptions(
        dest=dest,
        run_id=getattr(args, "run_id", None),  # schedule: each run names itself by its date
        learners=args.learners,
        chunk_size=args.chunk_size or DEFAULT_CHUNK_SIZE,
        compress=args.compress,
        encrypt=args.encrypt,
        exported_by=args.exported_by or settings.exported_by,
        parquet=args.parquet,
        html=getattr(args, "html", False),
        report=args.report,
        tolerate_failures=args.tolerate_failures,
        keep=args.keep,
        audit_log=str(settings.audit_log_path),
    )


def prefect_home(settings: Settings) -> Path:
    return settings.data_dir / "prefect"


def configure_prefect(settings: Settings) -> None:
    """Prefect's settings for a command-line run, applied before Prefect is first imported
    (it reads them then); values the user set in the environment win."""
    defaults = {
        "PREFECT_HOME": str(prefect_home(settings)),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    }
    home = {name: os.environ.setdefault(name, value) for name, value in defaults.items()}
    # Prefect makes its home without parents, and only warns when it cannot.
    Path(home["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


def unencrypted_tables_note(*, encrypt: bool, parquet: bool) -> str | None:
    """What an operator who asked for encryption must know when the run also writes Parquet:
    the tables are stored in the clear (they name learners by pseudonym only); None otherwise."""
    if not (encrypt and parquet):
        return None
    return (
        "--encrypt encrypts the documents only: the Parquet tables and schema.json are written "
        "unencrypted (learners appear by pseudonym only); add --no-parquet to write none"
    )


def run_archive(args: argparse.Namespace, settings: Settings) -> None:
    """Write one snapshot <dest>/<run id>/: every learner's document, manifest.json (written last)
    and Parquet tables for analysts. Run it again after an interruption to finish the same
    snapshot; after it finished, it changes nothing."""
    from datetime import UTC, datetime

    from extract.errors import ExtractError
    from flows.errors import ArchiveError
    from flows.options import ArchiveSecrets
    from flows.preflight import check_archive
    from load.errors import LoadError

    options = _options(args, settings)
    secrets = ArchiveSecrets.from_settings(settings, database_url=args.database_url)
    # Before Prefect starts: a run that cannot work is one line in a fraction of a second.
    try:
        run_id = check_archive(options, secrets, now=datetime.now(UTC))
    except (ArchiveError, ExtractError, LoadError) as exc:
        raise UserError(str(exc)) from None
    warn_of_missing_indexes(secrets.source_url.get_secret_value())
    if note := unencrypted_tables_note(encrypt=options.encrypt, parquet=options.parquet):
        print(f"{PROG}: note: {note}", file=sys.stderr)
    configure_prefect(settings)  # before the task runner's import loads Prefect
    from flows.server import LocalServer

    # No server configured: start the local one now, so it comes up while Prefect is imported.
    early = None if os.environ.get("PREFECT_API_URL") else LocalServer(prefect_home(settings))
    try:
        runner = _task_runner(args)
        from flows.archive import archive_learners
        from flows.errors import quiet_expected_tracebacks
        from flows.server import prefect_api

        quiet_expected_tracebacks()
        flow = archive_learners.with_options(task_runner=runner)
        started, early = early, None  # prefect_api owns it from here
        with prefect_api(prefect_home(settings), started=started):
            # The id is fixed now, so a run that starts a second after midnight UTC is still
            # the run that was checked.
            result = flow(options=options.model_copy(update={"run_id": run_id}), secrets=secrets)
    except (ArchiveError, ExtractError, LoadError) as exc:
        raise UserError(str(exc)) from None
    finally:
        if early is not None:  # refused before the run (e.g. --dask-address): stop it
            early.stop()
    counts = result.counts
    print(
        f"snapshot {result.run_id} {result.status}: {counts.files} documents, "
        f"{counts.bytes / 1e6:.1f} MB, {counts.truncated} truncated, {counts.failed} failed"
    )
    print(f"snapshot: {result.snapshot}")
    print(f"manifest: {result.snapshot}/manifest.json")
    if result.read:
        print(f"source:   {result.read}")
    if result.parquet_rows:
        tables = ", ".join(f"{name} ({rows})" for name, rows in sorted(result.parquet_rows.items()))
        print(f"parquet:  {result.snapshot}/parquet/ — {tables}")
    if result.report:
        print(f"report:   {result.report}")
    if result.failed_learners or result.not_found:
        failed = ", ".join(str(i) for i in result.failed_learners + result.not_found)
        print(f"{PROG}: warning: not exported (tolerated): learner ids {failed}", file=sys.stderr)
    for run_id in result.deleted_snapshots:
        print(f"retention: deleted snapshot {run_id}")


def _task_runner(args: argparse.Namespace) -> Any:
    if args.dask_address:
        from flows.dask_runner import dask_task_runner

        return dask_task_runner(args.dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=args.workers)


def run_abandon(args: argparse.Namespace, settings: Settings) -> None:
    """Remove an unfinished run (everything under <dest>/.incomplete/<run id>/), never a
    published snapshot, and record it in the audit log. Refused while another process writes
    the run. Afterwards the run id starts afresh, with any options."""
    from datetime import UTC, datetime

    from flows.errors import ArchiveError
    from flows.run import abandon_run
    from load.audit import abandoned_record, append_audit
    from load.destination import open_destination
    from load.errors import LoadError
    from load.run_lock import run_lock

    destination = open_destination(str(args.dest))
    try:
        with run_lock(destination, args.run_id):
            files, started = abandon_run(destination, args.run_id)
            append_audit(
                settings.audit_log_path,
                abandoned_record(
                    at=datetime.now(UTC),
                    user_id=settings.exported_by,
                    run_id=args.run_id,
                    run_started_at=started,
                    files=files,
                ),
            )
    except (ArchiveError, LoadError) as exc:
        raise UserError(str(exc)) from None
    print(
        f"abandoned the unfinished run {args.run_id} in {destination.name}: {files} files removed; "
        "the audit log records it"
    )


def run_verify(args: argparse.Namespace, settings: Settings) -> None:
    """Check every file of a snapshot against manifest.json: size, sha256, decryption, JSON and
    schema validity, and the Parquet row counts. Exit 1 on any mismatch."""
    from learner_export.verify import verify_snapshot
    from load.codec import configured_fernet
    from load.destination import open_snapshot
    from load.snapshot_files import SnapshotNotFound

    fs, directory = open_snapshot(args.snapshot)
    try:
        report = verify_snapshot(fs, directory, configured_fernet(settings.encryption_key))
    except SnapshotNotFound:
        raise UserError(f"{args.snapshot}: no such snapshot directory") from None
    for problem in report.problems:
        print(f"{PROG}: mismatch: {problem}", file=sys.stderr)
    if report.problems:
        raise UserError(f"{args.snapshot}: {len(report.problems)} mismatch(es) with the manifest")
    pages = f" (and their {report.pages} pages)" if report.pages else ""
    print(
        f"{args.snapshot}: ok, {report.documents} documents{pages} and {report.parquet_parts} "
        "Parquet parts match the manifest"
    )


def run_decrypt(args: argparse.Namespace, settings: Settings) -> None:
    """Write the plain learner-data-{id}-{date}.json inside an encrypted and/or compressed document,
    using LEARNER_EXPORT_ENCRYPTION_KEY; print its path."""
    from load.codec import configured_fernet, decode_stored, plain_name, stored_format
    from load.destination import open_snapshot, read_if_exists
    from load.files import write_atomic

    name = Path(str(args.file)).name
    fernet = configured_fernet(settings.encryption_key)
    if stored_format(name).encrypted and fernet is None:
        raise UserError("decrypting needs the key: set LEARNER_EXPORT_ENCRYPTION_KEY")
    fs, path = open_snapshot(args.file)
    stored = read_if_exists(fs, path)
    if stored is None:
        raise UserError(f"{args.file}: no such file")
    document = decode_stored(name, stored, fernet)
    print(write_atomic(args.out, plain_name(name), document).path)


def run_schedule(args: argparse.Namespace, settings: Settings) -> None:
    """Serve archive-learners on a cron schedule (nightly by default) until interrupted. The source
    and keys come from this process's environment at each run. Uses the Prefect server at
    PREFECT_API_URL, or starts a local one for as long as it serves."""
    from datetime import UTC, datetime

    from extract.errors import ExtractError
    from flows.cron import check_cron, next_runs
    from flows.errors import ArchiveError
    from flows.options import ArchiveSecrets
    from flows.preflight import check_schedule
    from load.errors import LoadError

    options = _options(args, settings)
    try:
        cron = check_cron(args.cron)
        check_schedule(options, ArchiveSecrets.from_settings(settings))
    except (ArchiveError, ExtractError, LoadError) as exc:
        raise UserError(str(exc)) from None
    configure_prefect(settings)
    from flows.schedule import build_deployment, serve_deployment

    deployment = build_deployment(options, cron=cron, name=args.name)
    print(
        f"serving archive-learners/{args.name} on cron {cron!r} (UTC) into {options.dest}; "
        "Ctrl-C stops",
        flush=True,
    )
    upcoming = ", ".join(f"{t:%Y-%m-%d %H:%M}" for t in next_runs(cron, datetime.now(UTC)))
    print(f"next runs (UTC): {upcoming}", flush=True)
    serve_deployment(deployment, prefect_home(settings))
    # Serving ends only when a stop signal arrived (Prefect's runner handles it and returns).
    raise KeyboardInterrupt


def run_deploy(args: argparse.Namespace, settings: Settings) -> None:
    """Register archive-learners on a work pool of the Prefect server at PREFECT_API_URL, on a
    cron schedule; `prefect worker start --pool POOL` processes then run it. The source and keys
    are not part of the deployment: each run reads them from its worker's environment."""
    from flows.cron import check_cron, next_runs
    from flows.errors import ArchiveError
    from load.errors import LoadError

    options = _options(args, settings)
    try:
        cron = check_cron(args.cron)
    except (ArchiveError, LoadError) as exc:
        raise UserError(str(exc)) from None
    configure_prefect(settings)
    from datetime import UTC, datetime

    from flows.schedule import register_deployment

    try:
        name = register_deployment(
            options, cron=cron, name=args.name, pool=args.pool, dask_address=args.dask_address
        )
    except ArchiveError as exc:
        raise UserError(str(exc)) from None
    upcoming = ", ".join(f"{t:%Y-%m-%d %H:%M}" for t in next_runs(cron, datetime.now(UTC)))
    print(f"deployed {name} on work pool {args.pool!r}, cron {cron!r} (UTC), into {options.dest}")
    if args.dask_address:
        print(f"chunk tasks on the Dask scheduler at {args.dask_address}")
    print(f"next runs (UTC): {upcoming}")
    print(f"start workers with: prefect worker start --pool {args.pool}", flush=True)
