"""Flow tests run for real against Prefect's temporary backend, started once per session."""

from __future__ import annotations

import os
import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.load.conftest import fernet_key, new_target, sqlite_exports  # noqa: F401 - fixtures

COMPAT_DIR = Path(__file__).parent / "prefect_compat"
"""Holds the `sitecustomize` that lets the locked Prefect server import (see its docstring)."""

_ENVIRONMENT = {
    # Nothing leaves the machine: the test server must not try to send telemetry.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


@pytest.fixture(scope="session")
def prefect_backend() -> Iterator[None]:
    """Prefect's test harness: a temporary local server and database for the whole session."""
    saved = {name: os.environ.get(name) for name in (*_ENVIRONMENT, "PYTHONPATH")}
    os.environ.update(_ENVIRONMENT)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(COMPAT_DIR), saved["PYTHONPATH"]) if part
    )
    runpy.run_path(str(COMPAT_DIR / "sitecustomize.py"))  # this process imports the app too
    from prefect.testing.utilities import prefect_test_harness

    try:
        with prefect_test_harness():
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
