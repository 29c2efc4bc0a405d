"""The archive's parameters: public options (stored by Prefect with each run) apart from the
secrets (never stored: Prefect records them masked, as `**********`)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from learner_export.settings import Settings

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
        default=None, description="Snapshot name; default: the run's UTC date (YYYY-MM-DD)."
    )
    learners: list[int] | None = Field(
        default=None, description="Learner ids to export; default: every LEARNER."
    )
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, gt=0, le=100_000)
    compress: Literal["gzip", "zstd"] | None = None
    encrypt: bool = False
    exported_by: int | None = Field(default=None, gt=0)
    parquet: bool = True
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
        if "://" in dest and "@" in urlsplit(dest).netloc:
            raise ValueError(
                "the destination URL must not hold credentials; give them to the storage "
                "library through its environment (e.g. AWS_* variables) instead"
            )
        return dest


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
