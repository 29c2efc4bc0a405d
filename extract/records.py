"""What extract hands to transform: one learner's rows, already in contract order.

Plain data, free of SQLAlchemy, so the pure `transform` stage can take it without importing the
database layer. Rows are read-only mappings keyed by the source column names (snake_case).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LearnerRows:
    """Everything the document needs about one learner, read in one snapshot.

    Invariants: `user` is a LEARNER `users` row without `password`; `lessons` are ordered
    `created_at` descending (NULL last), then `id` ascending by code point, and may have been capped
    at read time, while `lesson_total` always counts every lesson in the source; `achievements` are
    ordered `awarded_at` descending (NULL last), then `id`. JSON columns hold the stored text (its UTF-8
    bytes from PostgreSQL; from SQLite whatever it handed back); `json_checked` is True when the database itself guarantees
    that text is valid JSON (PostgreSQL's `json` type), so it need not be parsed again.
    """

    learner_id: int
    user: Row
    profile: Row | None
    lessons: Sequence[Row]
    lesson_total: int
    achievements: Sequence[Row]
    json_checked: bool


@dataclass(frozen=True, slots=True)
class Account:
    """Who a user is, for authorization: the `users` row's id, role and parent, nothing else.

    `role` is the stored text (normally ADMIN, PARENT or LEARNER; anything else grants nothing);
    `parent_id` is None for users without a parent on record.
    """

    id: int
    role: str
    parent_id: int | None
