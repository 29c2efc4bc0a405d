"""The archive's parameters: public options (stored by Prefect with each run) apart from the
secrets (never stored: Prefect records them masked, as `**********`)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from flows.errors import OptionUnavailable
from learner_export.settings import Settings
from load.codec import fernet_from_key
from load.destination import check_no_credentials
from load.errors import TerminalLoadError
from load.manifest import RunParameters
from transform.pseudonyms import check_key

DEFAULT_CHUNK_SIZE = 200
"""Learners per chunk task: large enough that Prefect's per-task cost (tens of ms in this process
and about as much in its API server) and a chunk's fixed cost (a connection, five statements, a
flush) are noise. Documents alone hold one learner's rows at a time whatever the size; with the
Parquet side outputs a chunk's rows stay in memory until its parts are written (~80 MB for 200
learners at 100 lessons each)."""

DEFAULT_WORKERS = 2
"""Chunks exported at once, in threads of one process. Building documents holds the GIL, so
Python work never runs in more than one of them at a time: a second thread keeps it busy while
the first waits for the database, a third and fourth only wait for the GIL while holding their
chunk's rows in memory (measured on bench/archive.py's database: no faster)."""


class ArchiveOptions(BaseModel):
    """What to archive and how. JSON-serializable and free of secrets: these are the flow's
    parameters, visible in Prefect's UI and database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dest: str = Field(description="Destination directory or fsspec URL of the snapshots.")
    run_id: str | None = Field(
        default=None,
        description="Snapshot name; default: the run's UTC date (YYYY-MM-DD), with a suffix "
        "naming the learners when only some are asked for.",
    )
    learners: list[int] | None = Field(
        default=None, description="Learner ids to export; default: every LEARNER."
    )
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, gt=0, le=100_000)
    compress: Literal["gzip", "zstd"] | None = None
    encrypt: bool = False
    exported_by: int | None = Field(default=None, gt=0)
    parquet: bool = True
    html: bool = Field(
        default=False, description="Also write each learner's readable page beside the document."
    )
    report: bool = Field(
        default=False,
        description="Also write the analyst report (report.html) into the snapshot; needs parquet.",
    )
    tolerate_failures: bool = False
    keep: int | None = Field(
        default=None, gt=0, description="Keep only this many newest snapshots (retention)."
    )
    audit_log: str | None = Field(
        default=None,
        description="Local JSON-lines audit log that gets one line per learner of a finished run "
        "(the file the HTTP endpoint appends to); none: no audit lines.",
    )

    @field_validator("dest")
    @classmethod
    def _no_credentials_in_dest(cls, dest: str) -> str:
        # The options are stored and shown by Prefect: a password in the URL would be too.
        try:
            return check_no_credentials(dest)
        except TerminalLoadError as exc:
            raise ValueError(str(exc)) from None


class ArchiveSecrets(BaseModel):
    """The source URL (it may hold a password) and the keys. Every field is a SecretStr, so
    Prefect stores this parameter masked; a scheduled run gets None and reads its settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_url: SecretStr
    encryption_key: SecretStr | None = None
    pseudonym_key: SecretStr | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, database_url: str | None = None
    ) -> ArchiveSecrets:
        return cls(
            source_url=SecretStr(database_url or settings.source_url),
            encryption_key=settings.encryption_key,
            pseudonym_key=settings.pseudonym_key,
        )


def default_run_id(learners: list[int] | None, now: datetime) -> str:
    """The run id when none is given: the UTC date for a run of every learner (the nightly run's
    id), and for a run of some learners the date plus a digest of their ids, so that an ad-hoc
    run never takes the id the nightly run will want, and the same list asked again resumes the
    same run. E.g. `2026-12-01` and `2026-12-01-learners-5c1f0a2b`."""
    date = f"{now:%Y-%m-%d}"
    if learners is None:
        return date
    ids = ",".join(str(i) for i in sorted(set(learners)))
    return f"{date}-learners-{hashlib.sha256(ids.encode()).hexdigest()[:8]}"


def check_options(
    options: ArchiveOptions, *, encryption_key: str | None, pseudonym_key: str | None
) -> None:
    """Refuse options that cannot work here: a missing key (or, for encryption, one that is not
    a Fernet key), or Parquet outputs without a pseudonym key."""
    if options.encrypt:
        if not encryption_key:
            raise OptionUnavailable(
                "--encrypt needs an encryption key: set LEARNER_EXPORT_ENCRYPTION_KEY "
                "(a Fernet key)"
            )
        fernet_from_key(encryption_key)
    if options.parquet and not pseudonym_key:
        raise OptionUnavailable(
            "the Parquet side outputs need a pseudonym key: set LEARNER_EXPORT_PSEUDONYM_KEY, "
            "or pass --no-parquet"
        )
    if options.report and not options.parquet:
        raise OptionUnavailable("--report draws the analyst tables: it cannot go with --no-parquet")
    if options.parquet and pseudonym_key:
        try:
            check_key(pseudonym_key.encode())
        except ValueError as exc:
            raise OptionUnavailable(f"LEARNER_EXPORT_PSEUDONYM_KEY: {exc}") from None


def run_parameters(options: ArchiveOptions) -> RunParameters:
    """What names a run besides its id: the learners and every option that changes its files."""
    return RunParameters(
        learners="all" if options.learners is None else sorted(set(options.learners)),
        chunk_size=options.chunk_size,
        compress=options.compress,
        encrypt=options.encrypt,
        exported_by=options.exported_by,
        parquet=options.parquet,
        html=options.html,
        report=options.report,
    )
