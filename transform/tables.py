"""The analyst tables built from learners' rows: a chunk of `LearnerRows` in, Arrow tables of the
declared schemas (`transform.analyst_schema`) out: learners, lessons, quiz questions,
achievements, subject performance and the knowledge graph's nodes and edges.

A sibling of the document, not built from it: the tables keep every lesson (no 1,000 cap) and
name learners only by keyed pseudonym (`transform.pseudonyms`). No column holds a name, email,
username, password, user id or parent id; the parent link is dropped altogether, since even a
pseudonymized parent would tell which children are siblings.

Every table is built with its declared schema (never an inferred one), so a chunk whose column
is all null keeps the declared type, and an empty chunk gives empty tables of the same schemas.
Every row starts with the run's id and export time (`RunStamp`).
Timestamps are UTC with millisecond precision, truncated exactly as in the document.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from transform import columns as col
from transform.analyst_schema import LEARNER_TABLES, RUN_COLUMNS, TABLE_SCHEMAS
from transform.pseudonyms import check_key, pseudonym
from transform.quiz import spec_questions, spec_title, spec_topic, text_items
from transform.records import LearnerRows, Row
from transform.spec_columns import SpecColumns, read_specs
from transform.values import (
    MALFORMED_JSON,
    UNREADABLE_TIMESTAMP,
    Problem,
    is_json_null,
    iso_timestamp,
)

UNREADABLE_INTEGER = "unreadable integer"

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
LEARNERS_SCHEMA = TABLE_SCHEMAS["learners"]
LESSONS_SCHEMA = TABLE_SCHEMAS["lessons"]
QUIZ_QUESTIONS_SCHEMA = TABLE_SCHEMAS["quiz_questions"]
ACHIEVEMENTS_SCHEMA = TABLE_SCHEMAS["achievements"]


@dataclass(frozen=True, slots=True)
class RunStamp:
    """What every row of a snapshot's tables says about the run: its id and export time (UTC)."""

    run_id: str
    exported_at: datetime


def stamped(table: pa.Table, name: str, run: RunStamp) -> pa.Table:
    """`table` (the columns of `name` after the run columns) with the run columns put first,
    cast to the declared schema of `name`."""
    schema = TABLE_SCHEMAS[name]
    rows = table.num_rows
    # pa.repeat fills the columns in C++: a Python list of one value per row cost 5 % of a
    # chunk with Parquet.
    return pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(run.run_id, pa.string()), rows),
            pa.repeat(pa.scalar(run.exported_at, schema.field("exported_at").type), rows),
            *table.columns,
        ],
        schema=schema,
    )


def body_schema(name: str) -> pa.Schema:
    """The declared schema of `name` without its run columns: what the row builders fill."""
    return _BODY_SCHEMAS[name]


_BODY_SCHEMAS = {
    name: pa.schema(list(schema)[len(RUN_COLUMNS) :]) for name, schema in TABLE_SCHEMAS.items()
}


@dataclass(frozen=True, slots=True)
class BuiltTables:
    """The tables of one chunk and what the export must report about them.

    `tables` has exactly the keys of LEARNER_TABLES, each table of exactly its declared schema.
    `problems` lists the stored values that were read as null (malformed JSON, unreadable
    timestamps or integers), in the order met; they name tables, columns and row ids, never
    values.
    """

    tables: dict[str, pa.Table]
    problems: tuple[Problem, ...]


def analyst_tables(
    rows: Sequence[LearnerRows], *, pseudonym_key: bytes, run: RunStamp
) -> dict[str, pa.Table]:
    """The analyst tables of a chunk of learners; see `build_analyst_tables`."""
    return build_analyst_tables(rows, pseudonym_key=pseudonym_key, run=run).tables


def build_analyst_tables(
    rows: Sequence[LearnerRows], *, pseudonym_key: bytes, run: RunStamp
) -> BuiltTables:
    """The analyst tables built from a chunk of learners' rows (LEARNER_TABLES), and the
    problems met building them; every row carries `run`.

    Every lesson is kept: `rows` must be read with `lesson_limit=None`, and a learner whose
    lessons were capped is a ValueError (the tables would silently lack lessons). So is a key
    shorter than `transform.pseudonyms.MIN_KEY_BYTES`. Stored data never raises: unreadable
    values become null and are listed in `problems`; specs of any shape are read as far as they go.
    """
    builder = LearnerTableRows(pseudonym_key)
    for learner in rows:
        builder.add(learner)
    return BuiltTables(tables=builder.take(run), problems=tuple(builder.problems))


SPEC_BATCH_LESSONS = 250
"""Lessons whose specs are read together by Arrow (`transform.spec_columns`): a few MB of text
per chunk thread. 500 was no faster and held more: the 2,000-learner PostgreSQL archive with
Parquet ran 21.3-22.3 s at 237-240 MB peak RSS with 250, 21.3-24.4 s at 249-251 MB with 500
(three alternating pairs, ad hoc); at 125 it was ~15 % slower for ~5 MB less."""


class LearnerTableRows:
    """The rows of the LEARNER_TABLES, added one learner at a time and taken as Arrow tables
    whenever the caller wants them written (so a chunk need not be held whole).

    Learners are kept until SPEC_BATCH_LESSONS lessons are waiting, and then their specs are read
    in one batch by Arrow's JSON reader (in C++, outside the GIL); a spec Arrow cannot read as
    Python would (another shape, malformed JSON) is read by Python, with the same result. The
    batch's lessons rows are then built a column at a time (`transform.columns`), or row by row
    when any of its values needs it. `problems` grows as learners are read and is never cleared.
    """

    __slots__ = (
        "_arrow",
        "_lesson_tables",
        "_odd",
        "_waiting",
        "_waiting_lessons",
        "batch_specs",
        "key",
        "problems",
        "rows",
    )

    def __init__(self, key: bytes, *, batch_specs: bool = True) -> None:
        check_key(key)
        self.key = key
        self.batch_specs = batch_specs  # False: every spec read by Python (tests compare both)
        self.problems: list[Problem] = []
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in LEARNER_TABLES}
        self._arrow: list[pa.Table] = []  # quiz_questions rows read in batches
        self._lesson_tables: list[pa.Table] = []  # lessons rows built column by column
        self._waiting: list[LearnerRows] = []
        self._waiting_lessons = 0
        self._odd: list[tuple[int, dict[str, Any]]] = []  # a batch's questions Python read

    def pending(self, name: str) -> int:
        """Rows of table `name` not taken yet, learners still waiting for their specs aside."""
        tables = {"quiz_questions": self._arrow, "lessons": self._lesson_tables}.get(name, [])
        return len(self.rows[name]) + sum(int(t.num_rows) for t in tables)

    def take(self, run: RunStamp) -> dict[str, pa.Table]:
        """The rows added since they were last taken, one table per name of LEARNER_TABLES."""
        self.flush()
        return {name: self.take_table(name, run) for name in LEARNER_TABLES}

    def take_table(self, name: str, run: RunStamp) -> pa.Table:
        """The rows of table `name` added since they were last taken (learners whose specs were
        waiting are read first)."""
        self.flush()
        if name == "lessons":
            self._settle_lessons()
            tables, self._lesson_tables = self._lesson_tables, []
            body = pa.concat_tables(tables) if tables else body_schema(name).empty_table()
            return stamped(body, name, run)
        rows, self.rows[name] = self.rows[name], []
        table = to_table(rows, body_schema(name))
        if name == "quiz_questions" and self._arrow:
            table = pa.concat_tables([table, *self._arrow])
            self._arrow = []
        return stamped(table, name, run)

    def _settle_lessons(self) -> None:
        """Turn the lesson rows added one by one into a table, after the tables before them."""
        if self.rows["lessons"]:
            self._lesson_tables.append(to_table(self.rows["lessons"], body_schema("lessons")))
            self.rows["lessons"] = []

    def add(self, learner: LearnerRows) -> None:
        if len(learner.lessons) < learner.lesson_total:
            raise ValueError(
                f"learner {learner.learner_id}: {len(learner.lessons)} of {learner.lesson_total} "
                "lessons were read; the analyst tables need every lesson (lesson_limit=None)"
            )
        self._waiting.append(learner)
        self._waiting_lessons += len(learner.lessons)
        if self._waiting_lessons >= SPEC_BATCH_LESSONS:
            self.flush()

    def flush(self) -> None:
        """Read the waiting learners into rows."""
        learners, self._waiting, self._waiting_lessons = self._waiting, [], 0
        if not learners:
            return
        if not self.batch_specs:
            for learner in learners:
                self._learner(learner, None, 0)
            return
        lessons = [lesson for learner in learners for lesson in learner.lessons]
        checked = all(learner.json_checked for learner in learners)
        specs = read_specs([lesson["spec"] for lesson in lessons], checked=checked)
        who = [pseudonym(learner.learner_id, self.key) for learner in learners]
        self._settle_lessons()
        try:
            table = self._lesson_table(learners, who, lessons, specs)
        except col.Irregular:
            # Some value needs the row-by-row reader (and maybe a problem reported).
            start = 0
            for learner in learners:
                self._learner(learner, specs, start)
                start += len(learner.lessons)
            table = to_table(self.rows["lessons"], body_schema("lessons"))
            self.rows["lessons"] = []
            self._lesson_tables.append(table)
        else:
            self._lesson_tables.append(table)
            start = 0
            for learner, name in zip(learners, who, strict=True):
                end = start + len(learner.lessons)
                self._learner_row(name, learner, sum(specs.question_count[start:end]))
                start = end
        self._arrow.append(self._batch_questions(specs, table))

    def _lesson_table(
        self, learners: list[LearnerRows], who: list[str], lessons: list[Row], specs: SpecColumns
    ) -> pa.Table:
        """The lessons rows of a batch whose specs Arrow read, built column by column: what
        `_batched_lesson` makes of each lesson, or Irregular when a value needs it."""
        if any(specs.slow):
            raise col.Irregular

        def column(name: str) -> list[Any]:
            return [lesson[name] for lesson in lessons]

        subject = col.texts(column("subject"))
        title, topic = specs.title, specs.topic
        subjects = subject.to_pylist()
        spec = col.inferred(column("spec"))
        if spec.type not in (pa.binary(), pa.string(), pa.null()):
            raise col.Irregular
        columns = {
            "learner_pseudonym": pa.array(
                [
                    name
                    for name, learner in zip(who, learners, strict=True)
                    for _ in learner.lessons
                ],
                pa.string(),
            ),
            "lesson_id": col.texts(column("id"), nullable=False),
            **{
                name: col.texts(column(name))
                for name in ("module_id", "template_id", "status", "category", "difficulty")
            },
            "subject": subject,
            "score": col.int32s(column("score"), nullable=True),
            "created_at": col.timestamps(column("created_at")),
            "completed_at": col.timestamps(column("completed_at")),
            "spec_bytes": pc.binary_length(spec) if spec.type != pa.null() else spec,
            "image_count": pa.array([_image_count(v) for v in column("image_paths")], pa.int32()),
            "has_spec": pa.array(specs.present, pa.bool_()),
            "spec_malformed": pa.array([False] * len(lessons), pa.bool_()),
            "spec_title": pa.array(
                [t if t is not None else o for t, o in zip(title, topic, strict=True)], pa.string()
            ),
            "topic": pa.array(
                [
                    _topic(t, s) if t is not None else o
                    for t, o, s in zip(title, topic, subjects, strict=True)
                ],
                pa.string(),
            ),
            "spec_grade_level": pa.array(specs.grade_level, pa.int32()),
            "keywords": pa.array(specs.keywords, pa.list_(pa.string())),
            "question_count": pa.array(specs.question_count, pa.int32()),
        }
        schema = body_schema("lessons")
        return pa.Table.from_arrays(
            [pc.cast(columns[f.name], f.type) for f in schema], schema=schema
        )

    def _learner(self, learner: LearnerRows, specs: SpecColumns | None, start: int) -> None:
        """Adds the learner, its lessons (read row by row) and the rest of its rows."""
        who = pseudonym(learner.learner_id, self.key)
        questions_total = 0
        for offset, lesson in enumerate(learner.lessons):
            if specs is None:
                questions_total += self._lesson(who, lesson)
            elif specs.slow[start + offset]:
                # Read by Python; its question rows join the batch's at the lesson's place.
                before = len(self.rows["quiz_questions"])
                questions_total += self._lesson(who, lesson)
                odd = self.rows["quiz_questions"][before:]
                del self.rows["quiz_questions"][before:]
                self._odd.extend((start + offset, row) for row in odd)
            else:
                questions_total += self._batched_lesson(who, lesson, specs, start + offset)
        self._learner_row(who, learner, questions_total)

    def _learner_row(self, who: str, learner: LearnerRows, questions_total: int) -> None:
        """Adds the learner's row, achievements and profile tables (its lessons are added)."""
        for achievement in learner.achievements:
            self._achievement(who, achievement)
        self.rows["learners"].append(
            {
                "learner_pseudonym": who,
                **self._profile(who, learner.profile),
                "created_at": self._timestamp(learner.user, "users", "created_at"),
                "lessons_total": len(learner.lessons),
                "lessons_done": sum(1 for row in learner.lessons if row["status"] == "DONE"),
                "questions_total": questions_total,
                "achievements_total": len(learner.achievements),
            }
        )

    def _profile(self, who: str, profile: Row | None) -> dict[str, Any]:
        if profile is None:
            return {"has_profile": False}

        def text_list(column: str) -> list[str | None] | None:
            return text_items(self._json(profile, "learner_profiles", column)[0])

        performance, _ = self._json(profile, "learner_profiles", "subject_performance")
        self.rows["subject_performance"].extend(_performance_rows(who, performance))
        graph, _ = self._json(profile, "learner_profiles", "graph")
        nodes, edges = _graph_rows(who, graph)
        self.rows["knowledge_graph_nodes"].extend(nodes)
        self.rows["knowledge_graph_edges"].extend(edges)
        return {
            "grade_level": self._int32(profile, "learner_profiles", "grade_level"),
            "has_profile": True,
            "subjects": text_list("subjects"),
            "recommended_subjects": text_list("recommended_subjects"),
            "struggling_areas": text_list("struggling_areas"),
        }

    def _lesson(self, who: str, lesson: Row) -> int:
        """Adds the lesson and its questions, its spec read by Python; returns how many
        questions."""
        spec, readable = self._json(lesson, "lessons", "spec")
        questions = spec_questions(spec)
        lesson_id = str(lesson["id"])
        subject = as_text(lesson["subject"])
        fields = spec if isinstance(spec, dict) else {}
        self.rows["lessons"].append(
            {
                **self._lesson_columns(who, lesson, lesson_id, subject),
                "has_spec": spec is not None,
                "spec_malformed": not readable,
                "spec_title": spec_title(spec),
                "topic": spec_topic(spec, subject),
                "spec_grade_level": int32_value(fields.get("gradeLevel")),
                "keywords": text_items(fields.get("keywords")),
                "question_count": len(questions),
            }
        )
        self.rows["quiz_questions"].extend(
            {
                "learner_pseudonym": who,
                "lesson_id": lesson_id,
                "question_id": question_id(lesson_id, question.index),
                "question_index": question.index,
                "subject": subject,
                "question": question.question,
                "option_count": None if question.options is None else len(question.options),
                "options": question.options,
                "options_key": question.options_key,
                "correct_index": question.correct_index,
                "correct_option": question.correct_option,
                "explanation": question.explanation,
            }
            for question in questions
        )
        return len(questions)

    def _batched_lesson(self, who: str, lesson: Row, specs: SpecColumns, at: int) -> int:
        """Adds the lesson whose spec is `specs`' entry `at` (its questions are added with the
        batch's); returns how many questions."""
        lesson_id = str(lesson["id"])
        subject = as_text(lesson["subject"])
        title, topic = specs.title[at], specs.topic[at]
        self.rows["lessons"].append(
            {
                **self._lesson_columns(who, lesson, lesson_id, subject),
                "has_spec": specs.present[at],
                "spec_malformed": False,
                "spec_title": title if title is not None else topic,
                "topic": _topic(title, subject) if title is not None else topic,
                "spec_grade_level": specs.grade_level[at],
                "keywords": specs.keywords[at],
                "question_count": specs.question_count[at],
            }
        )
        return specs.question_count[at]

    def _lesson_columns(
        self, who: str, lesson: Row, lesson_id: str, subject: str | None
    ) -> dict[str, Any]:
        """The lessons table's columns that do not come from the spec."""
        return {
            "learner_pseudonym": who,
            "lesson_id": lesson_id,
            "module_id": as_text(lesson["module_id"]),
            "template_id": as_text(lesson["template_id"]),
            "status": as_text(lesson["status"]),
            "subject": subject,
            "category": as_text(lesson["category"]),
            "difficulty": as_text(lesson["difficulty"]),
            "score": self._int32(lesson, "lessons", "score"),
            "created_at": self._timestamp(lesson, "lessons", "created_at"),
            "completed_at": self._timestamp(lesson, "lessons", "completed_at"),
            "spec_bytes": _text_bytes(lesson["spec"]),
            "image_count": self._image_count(lesson),
        }

    def _batch_questions(self, specs: SpecColumns, lessons: pa.Table) -> pa.Table:
        """The quiz_questions rows of a batch whose specs Arrow read, as the slow path makes
        them (`transform.quiz.QuizQuestion`), computed column by column; `lessons` are the
        batch's lessons rows."""
        at = specs.question_spec
        lesson_id = pc.take(lessons.column("lesson_id"), at)
        fields = specs.questions
        options = pc.coalesce(fields["options"], fields["choices"])
        options_key = pc.if_else(
            pc.is_valid(fields["options"]),
            "options",
            pc.if_else(pc.is_valid(fields["choices"]), "choices", pa.scalar(None, pa.string())),
        )
        count = pc.list_value_length(options)
        correct = fields["correctIndex"]
        pointed = pc.and_(pc.greater_equal(correct, 0), pc.less(correct, count))
        position = pc.add(
            pc.take(options.offsets, pa.array(range(len(options)), pa.int64())), correct
        )
        # Offsets index the list array's whole child array (`values`), whatever its slicing.
        correct_option = pc.take(options.values, pc.if_else(pointed, position, None))
        schema = body_schema("quiz_questions")
        columns = {
            "learner_pseudonym": pc.take(lessons.column("learner_pseudonym"), at),
            "lesson_id": lesson_id,
            "question_id": pc.binary_join_element_wise(
                lesson_id, pc.cast(specs.question_index, pa.string()), ":"
            ),
            "question_index": specs.question_index,
            "subject": pc.take(lessons.column("subject"), at),
            "question": fields["question"],
            "option_count": pc.cast(count, pa.int32()),
            "options": options,
            "options_key": options_key,
            "correct_index": pc.cast(correct, pa.int32()),
            "correct_option": correct_option,
            "explanation": fields["explanation"],
        }
        table = pa.Table.from_arrays(
            [pc.cast(columns[f.name], f.type) for f in schema], schema=schema
        )
        odd, self._odd = self._odd, []
        if not odd:
            return table
        # Put the questions of specs Python read at their lessons' places, as the slow path
        # alone would have them: by batch position, then question index (a stable sort).
        table = pa.concat_tables([table, to_table([row for _, row in odd], schema)])
        place = pa.concat_arrays([at, pa.array([position for position, _ in odd], at.type)])
        order = pc.sort_indices(
            pa.table({"place": place, "index": table.column("question_index")}),
            sort_keys=[("place", "ascending"), ("index", "ascending")],
        )
        return table.take(order)

    def _image_count(self, lesson: Row) -> int | None:
        if is_json_null(lesson["image_paths"]):
            return 0  # as in the document, where NULL image paths are []
        paths, _ = self._json(lesson, "lessons", "image_paths")
        return len(paths) if isinstance(paths, list) else None

    def _achievement(self, who: str, achievement: Row) -> None:
        payload, _ = self._json(achievement, "achievements", "payload")
        if not isinstance(payload, dict):
            payload = {}
        self.rows["achievements"].append(
            {
                "learner_pseudonym": who,
                "achievement_id": str(achievement["id"]),
                "type": as_text(achievement["type"]),
                "earned_at": self._timestamp(achievement, "achievements", "awarded_at"),
                "title": _payload_text(payload, "title"),
                "icon": _payload_text(payload, "icon"),
            }
        )

    def _json(self, row: Row, table: str, column: str) -> tuple[Any, bool]:
        """The parsed JSON of `row[column]` (None for SQL NULL) and whether it could be read."""
        stored = row[column]
        try:
            return parse_stored_json(stored), True
        except ValueError:
            self.problems.append(Problem(table, column, str(row["id"]), MALFORMED_JSON))
            return None, False

    def _timestamp(self, row: Row, table: str, column: str) -> datetime | None:
        # Through the document's own formatter, so both outputs truncate the same way.
        try:
            text = iso_timestamp(row[column])
        except (ValueError, OverflowError, OSError):
            self.problems.append(Problem(table, column, str(row["id"]), UNREADABLE_TIMESTAMP))
            return None
        return None if text is None else datetime.fromisoformat(text)

    def _int32(self, row: Row, table: str, column: str) -> int | None:
        value = row[column]
        if value is None:
            return None
        if int32_value(value) is not None:
            return int(value)
        self.problems.append(Problem(table, column, str(row["id"]), UNREADABLE_INTEGER))
        return None


def to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows (dicts; a missing key is null) as a table of `schema`, built column by column (a
    few times faster than `pa.Table.from_pylist`)."""
    return pa.Table.from_arrays(
        [pa.array([row.get(f.name) for row in rows], f.type) for f in schema], schema=schema
    )


def _image_count(stored: Any) -> int | None:
    """`LearnerTableRows._image_count` of a stored value, or Irregular where it would
    report malformed JSON (or SQLite made a number of the text)."""
    if stored is None or stored == b"[]":
        return 0
    if not isinstance(stored, str | bytes):
        raise col.Irregular
    try:
        paths = orjson.loads(stored)
    except orjson.JSONDecodeError:
        raise col.Irregular from None
    if paths is None:
        return 0  # JSON null, as is_json_null reads it
    return len(paths) if isinstance(paths, list) else None


def _topic(title: str, subject: str | None) -> str:
    """`transform.quiz.spec_topic` of a spec whose title is `title`."""
    prefix = f"{subject}: " if subject else None
    return title.removeprefix(prefix) if prefix and title.startswith(prefix) else title


def question_id(lesson_id: str, index: int) -> str:
    """The id of a lesson's question: `<lesson id>:<index in the spec's list>`. Lesson ids are
    never renumbered, and a spec's questions keep their places, so it is stable across runs."""
    return f"{lesson_id}:{index}"


def int32_value(value: Any) -> int | None:
    """`value` when it is an integer (not a bool) within int32, else None."""
    if type(value) is int and _INT32_MIN <= value <= _INT32_MAX:
        return value
    return None


def _number(value: Any) -> float | None:
    """A JSON number as a float (bools are not numbers); None otherwise."""
    if type(value) in (int, float):
        return float(value)
    return None


def _json_text(value: Any) -> str | None:
    """Strings as they are, JSON null as None, anything else as its JSON text."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _performance_rows(who: str, performance: Any) -> list[dict[str, Any]]:
    """The rows of a profile's `subjectPerformance`: one per key whose value is an object."""
    if not isinstance(performance, dict):
        return []
    return [
        {
            "learner_pseudonym": who,
            "subject": subject,
            "average_score": _number(figures.get("averageScore")),
            "lessons_completed": int32_value(figures.get("lessonsCompleted")),
        }
        for subject, figures in performance.items()
        if isinstance(figures, dict)
    ]


def _graph_rows(who: str, graph: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The node and edge rows of a profile's knowledge graph (`{"nodes": [...], "edges": [...]}`);
    entries that are not objects keep their place with null fields."""
    if not isinstance(graph, dict):
        return [], []
    nodes, edges = graph.get("nodes"), graph.get("edges")
    nodes = nodes if isinstance(nodes, list) else []
    edges = edges if isinstance(edges, list) else []
    node_rows = []
    for index, node in enumerate(nodes):
        fields = node if isinstance(node, dict) else {}
        label = fields.get("label")
        node_rows.append(
            {
                "learner_pseudonym": who,
                "node_index": index,
                "node_id": _json_text(fields.get("id")),
                "label": label if isinstance(label, str) else None,
                "mastery": _number(fields.get("mastery")),
            }
        )
    edge_rows = []
    for index, edge in enumerate(edges):
        fields = edge if isinstance(edge, dict) else {}
        edge_rows.append(
            {
                "learner_pseudonym": who,
                "edge_index": index,
                "source": _json_text(fields.get("source")),
                "target": _json_text(fields.get("target")),
            }
        )
    return node_rows, edge_rows


def parse_stored_json(stored: Any) -> Any:
    """Stored JSON (text, bytes, or the number SQLite made of numeric text) parsed; None for NULL.
    Raises ValueError when it is not valid JSON."""
    if stored is None:
        return None
    if isinstance(stored, str | bytes | bytearray | memoryview):
        return orjson.loads(stored)  # JSONDecodeError is a ValueError; bytes must be UTF-8
    if type(stored) in (int, float):
        return stored
    raise ValueError(f"not JSON text: {type(stored).__name__}")


def _text_bytes(stored: Any) -> int | None:
    """How many bytes the stored JSON text takes (UTF-8); None for SQL NULL."""
    if stored is None:
        return None
    if isinstance(stored, str):
        return len(stored.encode("utf-8", "surrogatepass"))
    if isinstance(stored, bytes | bytearray | memoryview):
        return len(bytes(stored))
    return len(str(stored))


def as_text(value: Any) -> str | None:
    """A text column's value as text, whatever the driver made of it (a number SQLite stored in
    a TEXT column is written as its digits, a UUID in its canonical form)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _payload_text(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None
