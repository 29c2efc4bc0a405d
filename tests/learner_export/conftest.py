"""Fixtures of the `restore` command tests, shared with the restore tests of `load`."""

from tests.load.conftest import fernet_key, new_target, sqlite_exports  # noqa: F401 - fixtures
