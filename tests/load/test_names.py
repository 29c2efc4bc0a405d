"""load.names: contract §4 file names, dated by the export's UTC day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from load.names import document_filename


def test_name_has_learner_id_and_utc_date() -> None:
    assert document_filename(3, datetime(2024, 1, 15, 10, 0)) == "learner-data-3-2024-01-15.json"


def test_the_date_is_the_utc_date() -> None:
    late_in_new_york = datetime(2024, 1, 15, 22, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert document_filename(3, late_in_new_york) == "learner-data-3-2024-01-16.json"
    assert document_filename(3, datetime(2024, 1, 15, 23, 59, tzinfo=UTC)).endswith("01-15.json")


def test_suffixes_follow_the_json_extension() -> None:
    assert (
        document_filename(7, datetime(2024, 2, 1), suffix=".gz")
        == "learner-data-7-2024-02-01.json.gz"
    )
