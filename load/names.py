"""File names of contract §4."""

from __future__ import annotations

from datetime import UTC, datetime


def document_filename(learner_id: int, export_date: datetime, *, suffix: str = "") -> str:
    """`learner-data-{learnerId}-{YYYY-MM-DD}.json` plus `suffix` (".gz", ".zst", an encryption
    suffix), the date being the export's UTC date (a naive `export_date` is UTC)."""
    if export_date.tzinfo is not None:
        export_date = export_date.astimezone(UTC)
    return f"learner-data-{learner_id}-{export_date:%Y-%m-%d}.json{suffix}"
