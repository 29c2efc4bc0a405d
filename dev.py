#!/usr/bin/env python3
"""One entry point for a fresh clone: set up the locked environment, then run a job in it.

    python3 dev.py demo     # set up, build the demo database, run the main job on it
    python3 dev.py test     # set up, run the whole test suite (extra args go to pytest)
    python3 dev.py lint     # set up, run ruff (lint + format check) and mypy
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


def _run(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def setup() -> None:
    """Create `.venv` and install exactly the locked versions (hash-checked), then this project."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs under any python3 first)
        sys.exit(f"learner-export needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = _lock_digest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV.name}/ ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = (BIN / "python", "-m", "pip")
    # --require-hashes: every package must match the hash recorded in the lock, so a fresh
    # install is the same install everywhere.
    _run(*pip, "install", "--quiet", "--require-hashes", "-r", "requirements.lock")
    _run(*pip, "install", "--quiet", "--no-deps", "-e", ".")
    STAMP.write_text(wanted + "\n")


def demo() -> None:
    """The main job on the embedded demo database: build it, export one learner, print the path."""
    cli = BIN / "learner-export"
    _run(cli, "demo-db")
    _run(cli, "export", "3", "--out", "exports")


def test(extra: list[str]) -> int:
    return subprocess.run([str(BIN / "python"), "-m", "pytest", *extra], cwd=ROOT).returncode


def lint() -> int:
    checks = [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "ruff"), "format", "--check", "."],
        [str(BIN / "mypy")],
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
