"""What extract hands on: one learner's rows, already in contract order, and accounts.

Plain data, free of SQLAlchemy. `LearnerRows` is the shape `transform.records` declares as the
input it takes (transform owns that interface and imports nothing of extract). Rows are read-only
mappings keyed by the source column names (snake_case).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LearnerRows:
    """Everything the document needs about one learner, read in one snapshot: what
    `transform.records.LearnerRows` asks for, with the invariants its docstring states (order of
    lessons and achievements, the lesson cap and `lesson_total`, stored JSON text, `json_checked`).
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
