"""What transform takes: one learner's rows, as the interface this stage owns.

`transform` imports nothing of `extract`; it states here what it needs, and `extract.records`
provides it (its `LearnerRows` dataclass has exactly these attributes, which mypy checks wherever a
composition hands one to the other: the flows, the CLI, the endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

Row = Mapping[str, Any]
"""A read-only row keyed by the source column names (snake_case)."""


class LearnerRows(Protocol):
    """Everything the document and the analyst tables need about one learner, read in one
    snapshot.

    Invariants: `user` is a LEARNER `users` row without `password`; `lessons` are ordered
    `created_at` descending (NULL last), then `id` ascending by code point, and may have been
    capped at read time, while `lesson_total` always counts every lesson in the source;
    `achievements` are ordered `awarded_at` descending (NULL last), then `id`. JSON columns hold
    the stored text (its UTF-8 bytes from PostgreSQL; from SQLite whatever it handed back);
    `json_checked` is True when the database itself guarantees that text is valid JSON
    (PostgreSQL's `json` type), so it need not be parsed again.
    """

    @property
    def learner_id(self) -> int: ...

    @property
    def user(self) -> Row: ...

    @property
    def profile(self) -> Row | None: ...

    @property
    def lessons(self) -> Sequence[Row]: ...

    @property
    def lesson_total(self) -> int: ...

    @property
    def achievements(self) -> Sequence[Row]: ...

    @property
    def json_checked(self) -> bool: ...
