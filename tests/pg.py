"""A throwaway PostgreSQL server for the test suite, built from the server binaries.

`PostgresCluster` runs initdb into a temporary directory, starts the server on a free port of
127.0.0.1 (and a Unix socket inside that directory, nothing shared), and removes it all on `stop`.
initdb refuses to run as root, so as root the server runs as the `postgres` system user.

The default collation is ICU `en-US` where the binaries support it: a linguistic collation that
orders text differently from code point order, so the suite proves the exporter's ordering does
not depend on the database's collation.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from learner_export.processes import free_port

SUPERUSER = "postgres"
READER = "exporter_ro"
READER_PASSWORD = "reader-test-password"  # a throwaway role of a throwaway cluster


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the cluster would not start (the reason says
    which)."""


def find_bin_dir() -> Path:
    """The directory holding initdb/pg_ctl/postgres: $PATH first, then Debian's layout."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    if candidates:
        return candidates[0].parent
    raise PostgresUnavailable("no PostgreSQL server binaries (pg_ctl, initdb) on this machine")


class PostgresCluster:
    """One PostgreSQL server for the whole test session."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="learner-export-pg-"))
        self.data = self.base / "data"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no postgres user") from None
            os.chown(self.base, account.pw_uid, account.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)

    def start(self) -> None:
        common = ["initdb", "-D", str(self.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8"]
        result = self._run(
            *common, "--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=en-US"
        )
        if result.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            result = self._run(*common, "--locale=C.UTF-8")
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {result.stderr.strip()[-500:]}")
        last_error = ""
        for _ in range(5):  # another process may take the free port before the server does
            self.port = free_port()
            options = (
                f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            result = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"),
                "-o", options, "-w", "-t", "60", "start",
            )  # fmt: skip
            if result.returncode == 0:
                self._create_reader()
                return
            last_error = (self.base / "server.log").read_text(errors="replace")[-500:]
        raise PostgresUnavailable(f"the server would not start: {last_error}")

    def restart(self) -> None:
        """Restart the server (fast shutdown: sessions are cut), on the same port and data."""
        result = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-m", "fast",
            "-w", "-t", "60", "restart",
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresUnavailable(f"the server would not restart: {result.stderr[-500:]}")

    def terminate_sessions(self, application_name: str) -> int:
        """Terminate every session of `application_name` (as an operator or a failover would);
        returns how many there were."""
        import psycopg

        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (application_name,),
            ).fetchone()
        return int(row[0]) if row else 0

    def pids(self) -> list[int]:
        """The server's processes: the postmaster, then its children (the sessions too)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *(int(pid) for pid in children)]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres", *, reader: bool = False) -> str:
        """A URL for `database`, as the superuser or as the read-only role."""
        user = f"{READER}:{READER_PASSWORD}" if reader else SUPERUSER
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database).replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def _create_reader(self) -> None:
        self._admin(f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_PASSWORD}'")

    def create_database(self, name: str) -> str:
        """A new empty database `name`; returns its superuser URL."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def grant_reader(self, database: str) -> str:
        """Let the read-only role SELECT every table of `database` (and nothing else); its URL."""
        self._admin(f'GRANT CONNECT ON DATABASE "{database}" TO {READER}')
        self._admin(f"GRANT USAGE ON SCHEMA public TO {READER}", database)
        self._admin(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READER}", database)
        return self.url(database, reader=True)
