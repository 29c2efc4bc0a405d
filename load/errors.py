"""Errors raised while writing outputs. Messages name the destination path, never file content."""

from __future__ import annotations


class LoadError(Exception):
    """Base class of every error the load stage raises."""


class TransientLoadError(LoadError):
    """The destination refused or broke off in a way a retry may fix (timeouts, throttling)."""


class TerminalLoadError(LoadError):
    """Retrying will not help: no permission, no space, not a directory, a name clash."""
