"""Row factories for tests that need hand-made source rows rather than the demo database."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from extract.records import LearnerRows

EXPORT_DATE = datetime(2024, 1, 15, 12, 0, 0, 123_999)
"""The frozen clock of document tests: exportDate becomes 2024-01-15T12:00:00.123Z."""


def user_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 3,
        "username": "alice-123456",
        "email": "alice@example.com",
        "name": "Alice",
        "role": "LEARNER",
        "parent_id": 1,
        "created_at": datetime(2024, 1, 1, 0, 0, 0),
    }
    return row | overrides


def profile_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "user_id": 3,
        "grade_level": 5,
        "graph": '{"nodes":[],"edges":[]}',
        "subjects": '["Math","Reading","Science"]',
        "subject_performance": '{"Math":{"averageScore":85,"lessonsCompleted":12}}',
        "recommended_subjects": '["History"]',
        "struggling_areas": '["Fractions"]',
        "created_at": datetime(2024, 1, 1, 0, 0, 0),
    }
    return row | overrides


def lesson_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "550e8400-e29b-41d4-a716-446655440000",
        "learner_id": 3,
        "module_id": "custom-1705320600000",
        "status": "DONE",
        "subject": "Math",
        "category": "STEM",
        "difficulty": "beginner",
        "score": 85,
        "spec": '{"topic":"Addition","questions":[]}',
        "image_paths": "[]",
        "template_id": None,
        "created_at": datetime(2024, 1, 15, 10, 30, 0),
        "completed_at": None,
    }
    return row | overrides


def achievement_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "ach_123456",
        "learner_id": "3",
        "type": "FIRST_PERFECT",
        "payload": '{"type":"FIRST_PERFECT","icon":"🌟"}',
        "awarded_at": datetime(2024, 1, 15, 10, 30, 0),
    }
    return row | overrides


def learner_rows(
    *,
    user: dict[str, Any] | None = None,
    profile: dict[str, Any] | bool | None = True,
    lessons: list[dict[str, Any]] | None = None,
    lesson_total: int | None = None,
    achievements: list[dict[str, Any]] | None = None,
    json_checked: bool = False,
) -> LearnerRows:
    """A learner's rows; `profile=True` (default) means the factory profile, None means none."""
    lesson_list = [lesson_row()] if lessons is None else lessons
    return LearnerRows(
        learner_id=(user or user_row())["id"],
        user=user or user_row(),
        profile=profile_row() if profile is True else (profile or None),
        lessons=lesson_list,
        lesson_total=len(lesson_list) if lesson_total is None else lesson_total,
        achievements=[achievement_row()] if achievements is None else achievements,
        json_checked=json_checked,
    )


def zstd_bomb(inflated_bytes: int) -> bytes:
    """A valid Zstandard frame of zeros, `inflated_bytes` long once decompressed, built by hand
    from RLE blocks (4 bytes each for 128 KiB): the densest expansion Zstandard allows, ~32,000x,
    in a fraction of a second and without ever holding the inflated bytes."""
    block = 128 * 1024
    count, rest = divmod(inflated_bytes, block)
    assert count > 0 and rest == 0, "a whole number of 128 KiB blocks"
    # Frame header: magic; a descriptor announcing an 8-byte content size; a 128 KiB window
    # (log 17 = 10 + exponent 7), so a decoder needs no more; the content size.
    header = (0xFD2FB528).to_bytes(4, "little") + bytes([0b1100_0000, 7 << 3])
    header += inflated_bytes.to_bytes(8, "little")
    rle = (1 << 1) | (block << 3)  # Block_Type 1 (RLE) in bits 1-2, Block_Size from bit 3
    blocks = (rle.to_bytes(3, "little") + b"\0") * (count - 1)
    last = (rle | 1).to_bytes(3, "little") + b"\0"
    return header + blocks + last


PLATFORM_TABLES = """
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, username TEXT UNIQUE, role TEXT,
                    parent_id INTEGER);
CREATE TABLE learner_profiles (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL);
CREATE TABLE lessons (id TEXT PRIMARY KEY, learner_id INTEGER NOT NULL, status TEXT,
                      created_at TIMESTAMP);
CREATE UNIQUE INDEX one_active_lesson ON lessons (learner_id) WHERE status = 'ACTIVE';
CREATE TABLE achievements (id TEXT PRIMARY KEY, learner_id TEXT NOT NULL);
"""
"""The four tables indexed as the platform's real database is: primary keys, unique e-mails and
usernames, a partial unique index on ACTIVE lessons, nothing by learner."""


def platform_like_sqlite(path: Path) -> str:
    """A SQLite file with PLATFORM_TABLES (no rows); its URL."""
    with sqlite3.connect(path) as db:
        db.executescript(PLATFORM_TABLES)
    db.close()
    return f"sqlite:///{path}"
