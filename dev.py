#!/usr/bin/env python3
"""One entry point for a fresh clone: set up the locked environment, then run a job in it.

    python3 dev.py demo     # set up, build the demo database, run the main job on it
    python3 dev.py test     # set up, run the whole test suite (extra args go to pytest)
    python3 dev.py lint     # set up, run ruff (lint + format check), mypy and the layer contracts
    python3 dev.py setup    # only set up

Only the standard library is used here, so it runs with nothing but python3 (3.11+). The virtual
environment lives in `.venv/`; it is rebuilt only when `requirements.lock` or `pyproject.toml`
changed since the last setup, so the second run starts at once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".learner-export-lock.sha256"
LOCK_INPUTS = (ROOT / "requirements.lock", ROOT / "pyproject.toml")


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for path in LOCK_INPUTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True, env=env)


def setup() -> None:
    """Create `.venv` and install exactly the locked versions (hash-checked), then this project."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs on any python3 to say so)
        sys.exit(f"learner-export needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = _lock_digest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV.name}/ ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = (BIN / "python", "-m", "pip")
    # --require-hashes: every package must match the hash recorded in the lock, so a fresh
    # install is the same install everywhere. --no-deps: the lock already lists every
    # dependency, so pip has nothing to resolve; left to resolve, it looks at the index for an
    # extra such as prefect's `httpx[http2]`, and once the index holds a newer httpx than the
    # lock's, hash-checking mode refuses that unpinned candidate and the install fails.
    # `pip check` then proves that the lock was complete: every requirement satisfied.
    _run(*pip, "install", "--quiet", "--require-hashes", "--no-deps", "-r", "requirements.lock")
    _run(*pip, "install", "--quiet", "--no-deps", "-e", ".")
    _run(*pip, "check")
    STAMP.write_text(wanted + "\n")


DEMO_LEARNERS = 300
"""Learners of the quick start's demo database: enough that most cells of the analyst report
(subjects, grades, weeks by subject) have 5 or more learners and are shown, few enough that the
demo stays quick. The first 12 are the tests' demo learners, row for row."""

DEMO_PSEUDONYM_KEY = "demo-only-pseudonym-key"
"""Keys the demo's analyst pseudonyms; it is published here, so it protects nothing. Real runs
take LEARNER_EXPORT_PSEUDONYM_KEY from their configuration."""


def demo() -> None:
    """The main job on the embedded demo database: build it, archive every learner into
    `snapshots/<UTC date>/` with the analyst report, and say where the documents, manifest,
    Parquet tables and report are."""
    from datetime import UTC, datetime  # here: dev.py must import on any python3

    cli = BIN / "learner-export"
    run_id = datetime.now(UTC).strftime("%Y-%m-%d")
    env = {**os.environ}
    env.setdefault("LEARNER_EXPORT_PSEUDONYM_KEY", DEMO_PSEUDONYM_KEY)
    # The embedded demo database is ours to rebuild.
    _run(cli, "demo-db", "--replace", "--learners", str(DEMO_LEARNERS))
    _run(cli, "archive", "--dest", "snapshots", "--run-id", run_id, "--report", env=env)
    _run(cli, "verify", f"snapshots/{run_id}")
    print(
        f"\nThe snapshot is in snapshots/{run_id}/: one learner-data-<id>-{run_id}.json per"
        " learner, and manifest.json (sizes, sha256, lessons exported and in the source,"
        " truncation).",
        flush=True,
    )
    tables = f"snapshots/{run_id}/parquet"
    python = BIN.relative_to(ROOT) / "python"
    print(
        f"Analyst tables (Parquet) are in {tables}/<table>/. Open them with pandas or"
        " DuckDB:\n\n"
        f"  {python} -c \"import pandas as pd; print(pd.read_parquet('{tables}/lessons'))\"\n"
        f"  {python} -c \"import duckdb; duckdb.read_parquet('{tables}/lessons/*.parquet')"
        '.limit(5).show()"\n',
        flush=True,
    )
    print(
        f"The analyst report (plots, small cells suppressed; opens offline in any browser) is"
        f" snapshots/{run_id}/report.html. Make one of any snapshot with:\n\n"
        f"  {BIN.relative_to(ROOT) / 'learner-export'} report snapshots/{run_id}"
        f" --out report.html\n",
        flush=True,
    )


def test(extra: list[str]) -> int:
    return subprocess.run([str(BIN / "python"), "-m", "pytest", *extra], cwd=ROOT).returncode


def lint() -> int:
    checks = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],
        # The import contracts of pyproject's [tool.importlinter]: the layers, where Prefect may be
        # imported, no circles.
        [str(BIN / "lint-imports"), "--no-cache"],
    ]
    return max(subprocess.run(c, cwd=ROOT).returncode for c in checks)


def main(argv: list[str]) -> int:
    command, extra = (argv[0], argv[1:]) if argv else ("", [])
    if command not in {"setup", "demo", "test", "lint"}:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        setup()
        if command == "demo":
            demo()
        elif command == "test":
            return test(extra)
        elif command == "lint":
            return lint()
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
