"""transform/analyst_schema.py: one declaration per column, read by Arrow and the dictionary."""

from __future__ import annotations

import orjson
import pyarrow as pa

from transform.analyst_schema import (
    DECLARATIONS,
    LEARNER_TABLES,
    SOURCE_TABLES,
    TABLE_SCHEMAS,
    data_dictionary,
)


def dictionary() -> dict[str, object]:
    return data_dictionary(run_id="r1", pseudonym_key_fingerprint="f" * 32, skipped=["b", "a"])


def test_the_dictionary_says_what_the_arrow_field_metadata_says() -> None:
    tables = dictionary()["tables"]
    assert isinstance(tables, dict)
    assert list(tables) == list(TABLE_SCHEMAS)
    for name, schema in TABLE_SCHEMAS.items():
        described = tables[name]["columns"]
        assert [c["name"] for c in described] == schema.names
        assert tables[name]["meaning"] == schema.metadata[b"description"].decode()
        for column, field in zip(described, schema, strict=True):
            metadata = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
            assert column["meaning"] == metadata["description"]
            assert column["unit"] == metadata.get("unit")
            assert column["null_means"] == metadata.get("null_means")
            assert column["nullable"] == field.nullable == (column["null_means"] is not None)
            assert column["type"] == str(field.type)


def test_every_column_is_described_and_every_table_starts_with_the_run() -> None:
    for table in DECLARATIONS:
        assert table.meaning
        assert [c.name for c in table.columns[:3]] == ["run_id", "exported_at", "learner_pseudonym"]
        for column in table.columns:
            assert len(column.meaning) > 8, (table.name, column.name)
        assert len({c.name for c in table.columns}) == len(table.columns)
    assert TABLE_SCHEMAS["lessons"].field("exported_at").type == pa.timestamp("ms", tz="UTC")


def test_the_dictionary_is_json_with_the_run_and_key_fingerprint() -> None:
    text = orjson.dumps(dictionary())
    again = orjson.loads(text)
    assert again["run_id"] == "r1" and again["pseudonym_key_fingerprint"] == "f" * 32
    assert again["skipped_tables"] == ["a", "b"]
    assert again["tables"]["quiz_answers"]["source_table"] == "quiz_answers"
    assert again["tables"]["lessons"]["source_table"] is None


def test_the_tables_split_into_learner_tables_and_source_tables() -> None:
    assert set(LEARNER_TABLES) | set(SOURCE_TABLES) == set(TABLE_SCHEMAS)
    assert not set(LEARNER_TABLES) & set(SOURCE_TABLES)
