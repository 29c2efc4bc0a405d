"""The one typed settings object. Nothing else in the project reads the environment.

Built on first use by `get_settings()` (cached), never at import time, so tests and commands can
point it elsewhere (`get_settings.cache_clear()` after changing the environment).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "learner-export"


class Settings(BaseSettings):
    """Configuration from the environment (prefix `LEARNER_EXPORT_`; DATABASE_URL and JWT_SECRET
    are also read under their plain names, as the platform's own server names them)."""

    model_config = SettingsConfigDict(env_prefix="LEARNER_EXPORT_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded demo database and the audit log live by default.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "LEARNER_EXPORT_DATABASE_URL"),
        description="SQLAlchemy URL of the source; default: the embedded SQLite demo database."
        " A secret: it may hold a password.",
    )
    exported_by: int | None = Field(
        default=None,
        gt=0,
        description="User id recorded as exportedBy when a command is not given --exported-by.",
    )
    jwt_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("JWT_SECRET", "LEARNER_EXPORT_JWT_SECRET"),
        description="HS256 secret of the platform's tokens (the HTTP endpoint).",
    )
    audit_log: Path | None = Field(
        default=None,
        description="The append-only JSON-lines audit log of exports (default: audit.jsonl in"
        " data_dir).",
    )
    exports_per_minute: int = Field(
        default=30,
        gt=0,
        description="Export requests one PARENT or ADMIN may make to the HTTP endpoint per minute,"
        " counted across all the server's workers; more are answered 429 with Retry-After.",
    )
    database_pool_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds an HTTP request waits for a free source connection before it is"
        " answered 503.",
    )
    database_pool_size: int = Field(
        default=4,
        gt=0,
        description="Source connections of one HTTP server worker (no overflow): at most this"
        " many exports read, build and encode their document at once, which bounds the memory"
        " they take; more wait up to database_pool_timeout, then get 503.",
    )
    database_connect_timeout: int = Field(
        default=5,
        ge=2,
        description="Seconds the HTTP server waits for a new PostgreSQL connection (libpq's"
        " connect_timeout, which counts anything below 2 as 2).",
    )
    database_statement_timeout: float = Field(
        default=15.0,
        gt=0,
        description="Seconds one PostgreSQL statement of the HTTP server may run before the"
        " server cancels it (statement_timeout); the request is answered 503.",
    )
    http_request_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client has to send a whole request (head and body), counted from"
        " the connection's start or the end of its previous response; then it is closed.",
    )
    http_keep_alive_timeout: int = Field(
        default=5,
        gt=0,
        description="Seconds an idle keep-alive connection is kept open after a response.",
    )
    http_max_connections: int = Field(
        default=512,
        gt=0,
        description="Concurrent connections (or requests) per worker beyond which uvicorn"
        " answers new requests 503.",
    )
    notice_config: Path | None = Field(
        default=None,
        description="TOML or JSON file with what only the operator can say in the Art. 15 notice"
        " (controller, contact, purposes, recipients, retention, archive_keep).",
    )
    http_bytes_in_flight: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="Bytes of encoded documents one worker holds at most for transfers in"
        " flight (64 MiB: about ten 1,000-lesson documents); an export that does not fit is"
        " answered 503 with Retry-After. One document larger than this is still served alone.",
    )
    encryption_key: SecretStr | None = Field(
        default=None, description="Key for encrypting documents at rest (--encrypt)."
    )
    pseudonym_key: SecretStr | None = Field(
        default=None, description="Key of the learner pseudonyms in the analyst tables."
    )

    @property
    def demo_database_path(self) -> Path:
        return self.data_dir / "demo.sqlite3"

    @property
    def audit_log_path(self) -> Path:
        """LEARNER_EXPORT_AUDIT_LOG, or `audit.jsonl` in the data directory."""
        return self.audit_log or self.data_dir / "audit.jsonl"

    @property
    def rate_limit_path(self) -> Path:
        """The rate limit's shared store (SQLite), beside the audit log."""
        return self.audit_log_path.with_name("export-rate.sqlite3")

    @property
    def source_url(self) -> str:
        """DATABASE_URL, or the embedded demo database when none is set."""
        if self.database_url is not None and self.database_url.get_secret_value():
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.demo_database_path}"


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
