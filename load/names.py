"""File names of contract §4."""

from __future__ import annotations

from datetime import UTC, datetime


def document_filename(learner_id: int, export_date: datetime, *, suffix: str = "") -> str:
    """`learner-data-{learnerId}-{YYYY-MM-DD}.json` plus `suffix` (".gz", ".zst", an encryption
    suffix), the date being the export's UTC date (a naive `export_date` is UTC)."""
    if export_date.tzinfo is not None:
        export_date = export_date.astimezone(UTC)
    return f"learner-data-{learner_id}-{export_date:%Y-%m-%d}.json{suffix}"


def page_filename(learner_id: int, export_date: datetime) -> str:
    """The readable page beside a document: `learner-data-{learnerId}-{YYYY-MM-DD}.html`."""
    return document_filename(learner_id, export_date).removesuffix(".json") + ".html"


def family_filename(parent_id: int, export_date: datetime) -> str:
    """A family's bundle: `family-data-{parentId}-{YYYY-MM-DD}.zip` (the export's UTC date)."""
    if export_date.tzinfo is not None:
        export_date = export_date.astimezone(UTC)
    return f"family-data-{parent_id}-{export_date:%Y-%m-%d}.zip"
