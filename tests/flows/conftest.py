"""Flow tests run for real against Prefect's temporary backend, started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.load.conftest import fernet_key, new_target, sqlite_exports  # noqa: F401 - fixtures

_ENVIRONMENT = {
    # Nothing leaves the machine: the test server must not try to send telemetry.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


@pytest.fixture(scope="session")
def prefect_backend() -> Iterator[None]:
    """Prefect's test harness: a temporary local server and database for the whole session."""
    saved = {name: os.environ.get(name) for name in _ENVIRONMENT}
    os.environ.update(_ENVIRONMENT)
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
