"""The analyst tables' declared schemas, with every column described once.

Each column is declared with its meaning, its unit where it has one, and what a null in it means.
From that one declaration come both the Arrow schema the tables are built and written with (the
description is each field's metadata, so it travels inside every Parquet file) and the snapshot's
data dictionary `schema.json` (`data_dictionary`): the two cannot disagree.

Every table starts with the same two columns, `run_id` and `exported_at`, so rows read from many
snapshots at once still say which snapshot they came from, whatever path or glob read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "2"
"""Written into every file's schema metadata; raised when a column changes meaning or type
(2: the run columns, lesson spec fields, question ids and the new tables)."""

DICTIONARY_NAME = "schema.json"
"""The data dictionary's file name, at the top of a snapshot."""

DICTIONARY_FORMAT = "learner-export-data-dictionary/1"

TIMESTAMP = pa.timestamp("ms", tz="UTC")
# The item field is named `element`, as the Parquet spec names it, so the schema read back from a
# file is exactly the declared one.
TEXT_LIST = pa.list_(pa.field("element", pa.string(), nullable=True))

_PSEUDONYM = "the learner's keyed pseudonym (HMAC-SHA256 of the user id, 32 hex characters)"


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its Arrow type and nullability, what it means, its unit (None when it has
    none) and what a null means (None for a non-nullable column)."""

    name: str
    type: pa.DataType
    meaning: str
    null_means: str | None = None
    unit: str | None = None

    @property
    def nullable(self) -> bool:
        return self.null_means is not None

    def field(self) -> pa.Field:
        metadata = {"description": self.meaning}
        if self.unit is not None:
            metadata["unit"] = self.unit
        if self.null_means is not None:
            metadata["null_means"] = self.null_means
        return pa.field(self.name, self.type, nullable=self.nullable, metadata=metadata)


@dataclass(frozen=True, slots=True)
class TableDeclaration:
    name: str
    meaning: str
    columns: tuple[Column, ...]
    source: str | None = None  # the optional source table it is read from (contract §1b)

    def schema(self) -> pa.Schema:
        return pa.schema(
            [column.field() for column in self.columns],
            metadata={
                "learner_export.table": self.name,
                "learner_export.schema_version": SCHEMA_VERSION,
                "description": self.meaning,
            },
        )


RUN_COLUMNS = (
    Column("run_id", pa.string(), "the snapshot's run id (its directory name)"),
    Column(
        "exported_at",
        TIMESTAMP,
        "when the run started exporting: the export date of every document of the snapshot",
        unit="UTC, milliseconds",
    ),
)
"""The first two columns of every table."""


def _learner(meaning: str = _PSEUDONYM) -> Column:
    return Column("learner_pseudonym", pa.string(), meaning)


def _at(name: str, meaning: str, null_means: str) -> Column:
    return Column(name, TIMESTAMP, meaning, null_means, unit="UTC, milliseconds")


def _table(
    name: str, meaning: str, *columns: Column, source: str | None = None
) -> TableDeclaration:
    return TableDeclaration(name, meaning, (*RUN_COLUMNS, *columns), source)


_UNREADABLE = "the stored value is not an integer (SQLite only)"
_NO_PROFILE = "the learner has no profile"
_NOT_A_LIST = "not stored, or not a JSON list"

DECLARATIONS: tuple[TableDeclaration, ...] = (
    _table(
        "learners",
        "one row per learner of the snapshot",
        _learner(),
        Column("grade_level", pa.int32(), "the profile's current grade level", _NO_PROFILE),
        Column("has_profile", pa.bool_(), "whether the learner has a profile"),
        Column("subjects", TEXT_LIST, "the profile's subjects", _NOT_A_LIST),
        Column("recommended_subjects", TEXT_LIST, "subjects recommended to the learner", _NOT_A_LIST),
        Column("struggling_areas", TEXT_LIST, "topics the platform found hard for the learner", _NOT_A_LIST),
        _at("created_at", "when the account was created", "not recorded or unreadable"),
        Column("lessons_total", pa.int32(), "every lesson of the learner (no 1,000 cap)", unit="lessons"),
        Column("lessons_done", pa.int32(), "lessons with status DONE", unit="lessons"),
        Column("questions_total", pa.int32(), "quiz questions over all lesson specs", unit="questions"),
        Column("achievements_total", pa.int32(), "achievements awarded", unit="achievements"),
    ),
    _table(
        "lessons",
        "one row per lesson, every lesson of every learner",
        _learner(),
        Column("lesson_id", pa.string(), "the lesson's id"),
        Column("module_id", pa.string(), "the module the lesson belongs to", "none recorded"),
        Column("template_id", pa.string(), "the template the lesson was made from", "none recorded"),
        Column("status", pa.string(), "QUEUED, ACTIVE or DONE", "none recorded"),
        Column("subject", pa.string(), "the lesson's subject (as stored on the lesson)", "none recorded"),
        Column("category", pa.string(), "the subject's category", "none recorded"),
        Column("difficulty", pa.string(), "beginner, intermediate or advanced", "none recorded"),
        Column("score", pa.int32(), "the learner's score", "not scored (unfinished, or not recorded)", unit="percent, 0-100"),
        _at("created_at", "when the lesson was created", "not recorded or unreadable"),
        _at("completed_at", "when the lesson was completed", "not completed, or unreadable"),
        Column("has_spec", pa.bool_(), "whether the lesson has a readable, non-null spec"),
        Column("spec_malformed", pa.bool_(), "whether the stored spec is invalid JSON (read as null)"),
        Column("spec_bytes", pa.int64(), "size of the stored spec text", "the spec is NULL", unit="bytes, UTF-8"),
        Column("spec_title", pa.string(), "the spec's `title` (or the older shape's `topic`), as stored", "the spec has neither"),
        Column("topic", pa.string(), "the spec's title without a leading `<subject>: ` (the lesson's own subject), or the older shape's `topic`", "the spec has no title or topic"),
        Column("spec_grade_level", pa.int32(), "the grade level the lesson was written for (the spec's `gradeLevel`); may differ from the profile's current grade", "the spec has no integer gradeLevel"),
        Column("keywords", TEXT_LIST, "the spec's `keywords`", "the spec has no keyword list"),
        Column("question_count", pa.int32(), "entries of the spec's quiz (its rows in quiz_questions)", unit="questions"),
        Column("image_count", pa.int32(), "entries of the lesson's image paths (0 when NULL)", "image_paths is not a JSON list", unit="images"),
    ),
    _table(
        "quiz_questions",
        "one row per entry of a lesson spec's `questions` list",
        _learner(),
        Column("lesson_id", pa.string(), "the lesson whose spec holds the question"),
        Column("question_id", pa.string(), "`<lesson_id>:<question_index>`: the question, stable across snapshots; joins quiz_answers"),
        Column("question_index", pa.int32(), "the question's position in the spec's list, from 0"),
        Column("subject", pa.string(), "the lesson's subject", "none recorded"),
        Column("question", pa.string(), "the question text as shown", "not a string"),
        Column("option_count", pa.int32(), "how many answer options", "no option list", unit="options"),
        Column("options", TEXT_LIST, "the answer options (non-strings as their JSON text)", "no option list"),
        Column("options_key", pa.string(), "where the options were: `options`, or the older `choices`", "no option list"),
        Column("correct_index", pa.int32(), "the correct option's position, from 0", "not an integer"),
        Column("correct_option", pa.string(), "the correct option's text", "no option at correct_index"),
        Column("explanation", pa.string(), "the spec's explanation of the answer", "not a string"),
    ),
    _table(
        "achievements",
        "one row per achievement",
        _learner(),
        Column("achievement_id", pa.string(), "the achievement's id"),
        Column("type", pa.string(), "the achievement's type", "none recorded"),
        _at("earned_at", "when it was awarded", "not recorded or unreadable"),
        Column("title", pa.string(), "the payload's `title`", "the payload has no string title"),
        Column("icon", pa.string(), "the payload's `icon`", "the payload has no string icon"),
    ),
    _table(
        "subject_performance",
        "one row per subject of a profile's `subjectPerformance` object",
        _learner(),
        Column("subject", pa.string(), "the subject (the object's key)"),
        Column("average_score", pa.float64(), "the platform's average score in the subject", "not a number", unit="percent, 0-100"),
        Column("lessons_completed", pa.int32(), "lessons completed in the subject, as the platform counted them", "not an integer", unit="lessons"),
    ),
    _table(
        "knowledge_graph_nodes",
        "one row per node of a profile's knowledge `graph`",
        _learner(),
        Column("node_index", pa.int32(), "the node's position in the graph's `nodes` list, from 0"),
        Column("node_id", pa.string(), "the node's `id` (non-strings as their JSON text)", "the node has no id"),
        Column("label", pa.string(), "the node's `label`", "not a string"),
        Column("mastery", pa.float64(), "the node's `mastery`", "not a number", unit="fraction, 0-1"),
    ),
    _table(
        "knowledge_graph_edges",
        "one row per edge of a profile's knowledge `graph`",
        _learner(),
        Column("edge_index", pa.int32(), "the edge's position in the graph's `edges` list, from 0"),
        Column("source", pa.string(), "the `id` of the node it leaves (non-strings as JSON text)", "no source"),
        Column("target", pa.string(), "the `id` of the node it reaches (non-strings as JSON text)", "no target"),
    ),
    _table(
        "quiz_answers",
        "one row per answer a learner gave (the platform's optional quiz_answers table)",
        _learner(),
        Column("answer_id", pa.string(), "the answer's id"),
        Column("lesson_id", pa.string(), "the lesson the question was asked in"),
        Column("question_id", pa.string(), "`<lesson_id>:<question_index>`; joins quiz_questions", _UNREADABLE),
        Column("question_index", pa.int32(), "the question's position in the lesson spec's list, from 0", _UNREADABLE),
        Column("question_hash", pa.string(), "the platform's hash of the question: the same question across lessons"),
        Column("user_answer", pa.int32(), "the option the learner chose, from 0", _UNREADABLE),
        Column("correct_answer", pa.int32(), "the correct option, from 0", _UNREADABLE),
        Column("is_correct", pa.bool_(), "whether the learner's answer was correct"),
        Column("concept_tags", TEXT_LIST, "the concepts the question tests", "none recorded, or unreadable"),
        _at("answered_at", "when the learner answered", "not recorded or unreadable"),
        source="quiz_answers",
    ),
    _table(
        "concept_mastery",
        "one row per concept a learner was tested on (the platform's optional concept_mastery table)",
        _learner(),
        Column("concept_name", pa.string(), "the concept"),
        Column("subject", pa.string(), "the concept's subject"),
        Column("correct_count", pa.int32(), "correct answers on the concept", _UNREADABLE, unit="answers"),
        Column("total_count", pa.int32(), "answers on the concept", _UNREADABLE, unit="answers"),
        Column("mastery_level", pa.int32(), "the platform's mastery estimate", _UNREADABLE, unit="percent, 0-100"),
        _at("last_tested", "when the concept was last tested", "not recorded or unreadable"),
        Column("needs_reinforcement", pa.bool_(), "whether the platform flags the concept for review"),
        _at("created_at", "when the row was created", "not recorded or unreadable"),
        source="concept_mastery",
    ),
)  # fmt: skip
"""Every analyst table, in the order they are built; the names are directory names."""

TABLES: dict[str, TableDeclaration] = {table.name: table for table in DECLARATIONS}

TABLE_SCHEMAS: dict[str, pa.Schema] = {table.name: table.schema() for table in DECLARATIONS}
"""The declared Arrow schema of every analyst table, by name."""

LEARNER_TABLES = tuple(table.name for table in DECLARATIONS if table.source is None)
"""The tables built from the rows of the document's four source tables."""

SOURCE_TABLES = {table.name: table.source for table in DECLARATIONS if table.source is not None}
"""The tables read from an optional source table (contract §1b), by table: its source table."""


def data_dictionary(
    *, run_id: str, pseudonym_key_fingerprint: str | None, skipped: list[str]
) -> dict[str, Any]:
    """The data dictionary of a snapshot (`schema.json`): every table and column with its type,
    meaning, unit and what null means, exactly as the Arrow field metadata says; the pseudonym
    key's fingerprint (snapshots with the same one can be joined on `learner_pseudonym`); and
    the tables skipped because the source lacks their optional table."""
    return {
        "format": DICTIONARY_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "pseudonym_key_fingerprint": pseudonym_key_fingerprint,
        "skipped_tables": sorted(skipped),
        "tables": {
            table.name: {
                "meaning": table.meaning,
                "source_table": table.source,
                "columns": [
                    {
                        "name": column.name,
                        "type": str(column.type),
                        "nullable": column.nullable,
                        "meaning": column.meaning,
                        "unit": column.unit,
                        "null_means": column.null_means,
                    }
                    for column in table.columns
                ],
            }
            for table in DECLARATIONS
        },
    }
