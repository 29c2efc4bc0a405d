"""Errors raised while reading the source, split the way a scheduler needs them.

Messages name the learner id, table or database kind, never a row's content or a connection URL
(it may hold a password): they end up in logs and orchestration metadata.
"""

from __future__ import annotations


class ExtractError(Exception):
    """Base class of every error the extract stage raises."""


class TransientExtractError(ExtractError):
    """The source could not be reached or broke off; the same read may succeed if retried."""


class TerminalExtractError(ExtractError):
    """Retrying will not help: the source is missing, misconfigured or lacks the tables."""


class LearnerNotFound(TerminalExtractError):
    """The id names no user, or a user who is not a LEARNER."""

    def __init__(self, learner_id: int) -> None:
        super().__init__(f"learner {learner_id} not found: no LEARNER user has this id")
        self.learner_id = learner_id
