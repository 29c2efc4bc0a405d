"""A deterministic demo database: realistic rows, including every awkward case of contract §1.

`demo_rows(learners, seed)` is pure: the same arguments give the same rows, ids and bytes of
JSON text, whatever the database. `build_demo_database` writes them to SQLite or PostgreSQL, so the
two hold the same data (except the one malformed JSON text, which PostgreSQL's `json` type cannot
hold: it stores NULL there, and both export as `null`).

Layout of the users, for any `learners` >= 1: user 1 is a PARENT, user 2 the ADMIN, and then
families of a parent followed by one to three learners; user 3 is always a learner, child of
user 1. Learner roles by position among learners (`SPECIAL_LEARNERS`): the second has more than
1,000 lessons, the third no profile, the fourth a profile whose JSON columns are all NULL.
"""

from __future__ import annotations

import base64
import hashlib
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from extract import tables
from extract.engine import normalize_url, sqlite_path
from load import database

BIG_LEARNER_LESSONS = 1_050
"""Lessons of the learner that exceeds the 1,000-lesson cap of a document."""

MALFORMED_SPEC = '{"title": "Fractions", "sections": [{"heading": "Halves"'
"""Stored in SQLite as the spec of one lesson: JSON cut off mid-write."""

SPECIAL_LEARNERS = {
    "big": 1,  # more than 1,000 lessons
    "no_profile": 2,
    "null_profile_json": 3,
    "no_parent": 11,  # or the last learner, in a demo of 5 to 11 learners
}

_EPOCH = datetime(2024, 1, 1, 8, 0, 0)

_FIRST_NAMES = [
    "Alice", "Zoë", "José", "Łucja", "Søren", "李雷", "Aarav", "Chloé", "Mateo", "Amara",
    "Björn", "Nadia", "Yuki", "Omar", "Inès", "Kwame", "Freya", "Dmitri", "Ana", "Liam",
]  # fmt: skip
_LAST_NAMES = ["Nguyen", "García", "Müller", "O'Brien", "Kowalska", "Østergaard", "Smith"]
_SUBJECTS = {
    "Math": ("STEM", ["Addition", "Fractions", "Geometry", "Multiplication", "Decimals"]),
    "Science": ("STEM", ["Plants", "The Water Cycle", "Magnets", "Planets", "Electricity"]),
    "Reading": ("Language Arts", ["Main Idea", "Inference", "Vocabulary", "Poetry"]),
    "History": ("Social Studies", ["Ancient Egypt", "The Silk Road", "Explorers"]),
    "Art": ("Creative", ["Color Theory", "Perspective", "Printmaking"]),
}
_DIFFICULTIES = ["beginner", "intermediate", "advanced"]
_WORDS = [
    "learn", "number", "pattern", "shape", "measure", "story", "reason", "compare", "explain",
    "observe", "predict", "record", "careful", "example", "together", "notice", "because",
    "therefore", "whole", "part", "equal", "group", "sort", "build",
]  # fmt: skip
_ACHIEVEMENTS = [
    ("FIRST_LESSON", "First Steps", "Finished your first lesson", "🎉"),
    ("FIRST_PERFECT", "Perfect Score!", "Got 100% on your first quiz", "🌟"),
    ("STREAK_7", "On Fire", "Learned seven days in a row", "🔥"),
    ("MATH_MASTER", "Math Master", "Ten math lessons done", "🧮"),
    ("BOOKWORM", "Bookworm", "Ten reading lessons done", "📚"),
    ("EXPLORER", "Explorer", "Tried every subject", "🧭"),
]


def _json(value: Any) -> str:
    """JSON text as the platform writes it (JSON.stringify: compact, UTF-8)."""
    return orjson.dumps(value).decode()


@dataclass
class DemoRows:
    """Rows for the four tables and the two optional ones (contract §1b), JSON columns as text
    (`concept_tags` a list); `malformed` names the (table, column, id)
    cells holding invalid JSON text (SQLite only)."""

    users: list[dict[str, Any]] = field(default_factory=list)
    learner_profiles: list[dict[str, Any]] = field(default_factory=list)
    lessons: list[dict[str, Any]] = field(default_factory=list)
    achievements: list[dict[str, Any]] = field(default_factory=list)
    quiz_answers: list[dict[str, Any]] = field(default_factory=list)
    concept_mastery: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def learner_ids(self) -> list[int]:
        return [u["id"] for u in self.users if u["role"] == "LEARNER"]


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def moment(self, start: datetime, days: float) -> datetime:
        # Microseconds on purpose: the export must truncate them to milliseconds.
        return start + timedelta(seconds=self.rng.uniform(0, days * 86_400))

    def sentence(self, words: int) -> str:
        text = " ".join(self.rng.choice(_WORDS) for _ in range(words))
        return text[0].upper() + text[1:] + "."

    def user(self, user_id: int, role: str, parent_id: int | None) -> dict[str, Any]:
        first = self.rng.choice(_FIRST_NAMES)
        if user_id == 3:
            first = "Alice"
        handle = f"{first.lower()}-{self.rng.randrange(100_000, 999_999)}"
        return {
            "id": user_id,
            "email": None if role == "LEARNER" and user_id % 4 == 0 else f"{handle}@example.com",
            "username": handle,
            "name": f"{first} {self.rng.choice(_LAST_NAMES)}",
            "role": role,
            # Never exported: the tests look for these bytes in every output.
            "password": "$2b$10$" + base64.b64encode(self.rng.randbytes(40)).decode()[:53],
            "parent_id": parent_id,
            "created_at": self.moment(_EPOCH - timedelta(days=60), 30),
        }

    def profile(self, user_id: int, null_json: bool) -> dict[str, Any]:
        subjects = self.rng.sample(sorted(_SUBJECTS), k=3)
        performance = {
            s: {
                "averageScore": self.rng.randrange(40, 100),
                "lessonsCompleted": self.rng.randrange(30),
            }
            for s in subjects
        }
        nodes = [{"id": t, "label": t, "mastery": round(self.rng.random(), 2)} for t in
                 self.rng.sample(_SUBJECTS[subjects[0]][1], k=2)]  # fmt: skip
        graph = {"nodes": nodes, "edges": [{"source": nodes[0]["id"], "target": nodes[1]["id"]}]}
        json_values: dict[str, str | None] = {
            "graph": _json(graph),
            "subjects": _json(subjects),
            "subject_performance": _json(performance),
            "recommended_subjects": _json([self.rng.choice(sorted(_SUBJECTS))]),
            "struggling_areas": _json(self.rng.sample(_SUBJECTS[subjects[-1]][1], k=1)),
        }
        if null_json:
            json_values = dict.fromkeys(json_values)
        return {
            "id": self.uuid(),
            "user_id": user_id,
            "grade_level": self.rng.randrange(1, 9),
            **json_values,
            "created_at": self.moment(_EPOCH - timedelta(days=30), 10),
        }

    def spec(self, subject: str, topic: str, old_shape: bool) -> dict[str, Any]:
        count = self.rng.randrange(5, 11)
        questions = []
        for number in range(count):
            options = [str(self.rng.randrange(1, 100)) for _ in range(4)]
            question = {
                "question": f"Question {number + 1} about {topic}: {self.sentence(8)}",
                ("choices" if old_shape else "options"): options,
                "correctIndex": self.rng.randrange(4),
                "explanation": self.sentence(14),
            }
            questions.append(question)
        if old_shape:  # the seed page's older, smaller shape
            return {
                "topic": topic,
                "learningObjectives": [f"Understand {topic.lower()}"],
                "questions": questions,
            }
        return {
            "title": f"{subject}: {topic}",
            "summary": self.sentence(25),
            "sections": [
                {"title": f"Part {n + 1}", "content": " ".join(self.sentence(18) for _ in range(4))}
                for n in range(self.rng.randrange(2, 5))
            ],
            "questions": questions,
            "keywords": self.rng.sample(_WORDS, k=5),
            "gradeLevel": self.rng.randrange(1, 9),
        }

    def lessons(self, learner_id: int, count: int) -> Iterator[dict[str, Any]]:
        start = _EPOCH + timedelta(days=self.rng.uniform(0, 20))
        active_given = False
        previous: datetime | None = None
        for index in range(count):
            subject = self.rng.choice(sorted(_SUBJECTS))
            category, topics = _SUBJECTS[subject]
            topic = self.rng.choice(topics)
            # Every seventh lesson shares its predecessor's created_at: ties must break on id.
            created = previous if index % 7 == 1 and previous else self.moment(start, 300)
            previous = created
            roll = self.rng.random()
            status = "DONE" if roll < 0.8 else "QUEUED"
            if not active_given and roll > 0.95:
                status, active_given = "ACTIVE", True
            done = status == "DONE"
            spec: str | None = _json(self.spec(subject, topic, old_shape=index % 5 == 3))
            if index % 13 == 5:
                spec = None
            yield {
                "id": self.uuid(),
                "learner_id": learner_id,
                "template_id": self.uuid() if index % 3 == 0 else None,
                "module_id": f"custom-{int(created.timestamp() * 1000)}" if index % 4 else None,
                "status": status,
                "subject": subject,
                "category": category,
                "difficulty": self.rng.choice(_DIFFICULTIES),
                "image_paths": None
                if index % 6 == 2
                else _json([f"/images/{self.uuid()}.svg" for _ in range(index % 3)]),
                "spec": spec,
                # NULL scores: every unfinished lesson, and now and then a finished one.
                "score": self.rng.randrange(0, 101) if done and index % 11 != 4 else None,
                "created_at": None if index == count - 1 and count > 20 else created,
                "completed_at": created + timedelta(minutes=self.rng.uniform(3, 40))
                if done
                else None,
            }

    def achievements(self, learner_id: int) -> Iterator[dict[str, Any]]:
        picks = self.rng.sample(_ACHIEVEMENTS, k=self.rng.randrange(0, len(_ACHIEVEMENTS) + 1))
        for kind, title, description, icon in picks:
            payload = {"type": kind, "title": title, "description": description, "icon": icon}
            yield {
                "id": self.uuid(),
                "learner_id": str(learner_id),
                "type": kind,
                "payload": None if kind == "EXPLORER" else _json(payload),
                "awarded_at": self.moment(_EPOCH, 200),
            }


def demo_rows(learners: int = 12, seed: int = 7) -> DemoRows:
    """The demo data for `learners` learners (>= 1). Pure and deterministic in its arguments."""
    if learners < 1:
        raise ValueError("the demo needs at least one learner")
    gen = _Generator(seed)
    rows = DemoRows()
    rows.users.append(gen.user(1, "PARENT", None))
    rows.users.append(gen.user(2, "ADMIN", None))
    parent_id, next_id, made = 1, 3, 0
    while made < learners:
        family = 2 if parent_id == 1 else gen.rng.randrange(1, 4)
        for _ in range(min(family, learners - made)):
            position = made
            # One learner has no parent on record (an admin-created account): the twelfth (the
            # last of the default demo), so a larger demo only adds learners after the rows of a
            # smaller one; in a demo of 5 to 11 learners, the last.
            no_parent = min(learners, SPECIAL_LEARNERS["no_parent"] + 1) - 1
            parent = None if position == no_parent and learners > 4 else parent_id
            rows.users.append(gen.user(next_id, "LEARNER", parent))
            _learner_rows(gen, rows, next_id, position)
            next_id, made = next_id + 1, made + 1
        if made < learners:
            parent_id, next_id = next_id, next_id + 1
            rows.users.append(gen.user(parent_id, "PARENT", None))
    _plant_malformed_json(gen, rows)
    _answer_quizzes(random.Random(f"{seed}/answers"), random.Random(f"{seed}/mastery"), rows)
    return rows


def _learner_rows(gen: _Generator, rows: DemoRows, learner_id: int, position: int) -> None:
    if position != SPECIAL_LEARNERS["no_profile"]:
        null_json = position == SPECIAL_LEARNERS["null_profile_json"]
        rows.learner_profiles.append(gen.profile(learner_id, null_json))
    count = BIG_LEARNER_LESSONS if position == SPECIAL_LEARNERS["big"] else gen.rng.randrange(8, 40)
    rows.lessons.extend(gen.lessons(learner_id, count))
    rows.achievements.extend(gen.achievements(learner_id))
    if position == 0:
        # One lesson whose spec carries an inline image, as real specs sometimes do (~150 KB).
        image = base64.b64encode(gen.rng.randbytes(110_000)).decode()
        rows.lessons[-1]["spec"] = _json(
            {
                "title": "Art: Color Theory",
                "questions": [],
                "image": f"data:image/png;base64,{image}",
            }
        )


def _plant_malformed_json(gen: _Generator, rows: DemoRows) -> None:
    learner_lessons = [row for row in rows.lessons if row["learner_id"] == 3]
    victim = learner_lessons[min(2, len(learner_lessons) - 1)]
    victim["spec"] = MALFORMED_SPEC
    rows.malformed.append(("lessons", "spec", victim["id"]))


MASTERY_NEEDS_REINFORCEMENT = 60
"""The demo flags a concept for review below this mastery level."""


def _answer_quizzes(rng: random.Random, ids: random.Random, rows: DemoRows) -> None:
    """The optional tables' rows, consistent with the lessons: every DONE lesson whose stored spec
    holds questions was answered, one answer per question, between the lesson's creation and
    completion; as many answers are correct as its score says (rounded), or at random when it has
    no score. A concept is the lesson's topic; the mastery rows count each learner's answers per
    (subject, concept). A separate random stream, so the four tables' rows (and the documents)
    are what they were before the optional tables existed. The mastery rows' ids come from a
    stream of their own, drawn in learner order, so a demo with more learners holds the same
    rows for the first ones (answers are drawn in lesson order, so theirs are the same too)."""
    mastery: dict[tuple[int, str, str], list[Any]] = {}
    for lesson in rows.lessons:
        if lesson["status"] != "DONE" or lesson["completed_at"] is None or lesson["spec"] is None:
            continue
        if ("lessons", "spec", lesson["id"]) in rows.malformed:
            continue
        spec = orjson.loads(lesson["spec"])
        questions = spec.get("questions") or []
        if not questions:
            continue
        topic = spec.get("topic") or spec["title"].removeprefix(f"{lesson['subject']}: ")
        score = lesson["score"]
        right = round(len(questions) * score / 100) if score is not None else None
        correct_ones = (
            set(rng.sample(range(len(questions)), k=right)) if right is not None else None
        )
        start = lesson["created_at"] or lesson["completed_at"] - timedelta(minutes=5)
        span = max((lesson["completed_at"] - start).total_seconds(), 1.0)
        for index, question in enumerate(questions):
            options = question.get("options") or question.get("choices")
            answer = question["correctIndex"]
            is_correct = index in correct_ones if correct_ones is not None else rng.random() < 0.7
            if not is_correct:
                answer = rng.choice([n for n in range(len(options)) if n != answer])
            answered = start + timedelta(seconds=span * (index + 1) / (len(questions) + 1))
            tags = [topic] if index % 4 else [topic, lesson["subject"]]
            rows.quiz_answers.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "learner_id": lesson["learner_id"],
                    "lesson_id": lesson["id"],
                    "question_index": index,
                    "question_text": question["question"],
                    "question_hash": hashlib.sha256(question["question"].encode()).hexdigest(),
                    "user_answer": answer,
                    "correct_answer": question["correctIndex"],
                    "is_correct": is_correct,
                    "concept_tags": tags,
                    "answered_at": answered,
                }
            )
            key = (lesson["learner_id"], lesson["subject"], topic)
            seen = mastery.setdefault(key, [0, 0, answered, answered])
            seen[0] += is_correct
            seen[1] += 1
            seen[2], seen[3] = min(seen[2], answered), max(seen[3], answered)
    for (learner_id, subject, concept), (correct, total, first, last) in sorted(mastery.items()):
        level = round(100 * correct / total)
        rows.concept_mastery.append(
            {
                "id": str(uuid.UUID(int=ids.getrandbits(128), version=4)),
                "learner_id": learner_id,
                "concept_name": concept,
                "subject": subject,
                "correct_count": correct,
                "total_count": total,
                "mastery_level": level,
                "last_tested": last,
                "needs_reinforcement": level < MASTERY_NEEDS_REINFORCEMENT,
                "created_at": first,
            }
        )


EXTRA_TABLE_DDL = "CREATE TABLE points (id integer PRIMARY KEY, user_id integer, points integer)"
"""A table the exporter must ignore: real platform databases hold many more than the four."""


class DemoDatabaseExists(Exception):
    """The target already holds the contract's tables and replacing them was not asked for."""


def build_demo_database(url: str, *, learners: int, seed: int, replace: bool) -> DemoRows:
    """Create the contract's tables (the four, and the two optional ones of §1b) at `url` and
    fill them with `demo_rows(learners, seed)`.

    With `replace`, existing demo tables are dropped first (a SQLite file is recreated);
    without it an existing table is an error (`DemoDatabaseExists`), never silently mixed into.
    An extra table and an extra `users` column are added, as a real platform database has them.
    """
    rows = demo_rows(learners, seed)
    engine = _writable_engine(url, replace=replace)
    try:
        with engine.begin() as conn:
            existing = set(sa.inspect(conn).get_table_names()) & (
                set(tables.metadata.tables) | set(tables.optional_metadata.tables) | {"points"}
            )
            if existing and not replace:
                raise DemoDatabaseExists(
                    f"the target already has tables {sorted(existing)}; "
                    "pass --replace to rebuild them"
                )
            if existing:
                conn.execute(sa.text("DROP TABLE IF EXISTS points"))
                tables.optional_metadata.drop_all(conn)
                database.drop_tables(conn, list(tables.metadata.sorted_tables))
            tables.metadata.create_all(conn)
            tables.optional_metadata.create_all(conn)
            conn.execute(sa.text(EXTRA_TABLE_DDL))
            conn.execute(sa.text("ALTER TABLE users ADD COLUMN theme text DEFAULT 'sunny'"))
            postgres = conn.dialect.name == "postgresql"
            for table, table_rows in (
                (tables.users, rows.users),
                (tables.learner_profiles, rows.learner_profiles),
                (tables.lessons, [_storable(r, postgres, rows) for r in rows.lessons]),
                (tables.achievements, rows.achievements),
                (tables.quiz_answers, [_answer_storable(r, postgres) for r in rows.quiz_answers]),
                (tables.concept_mastery, rows.concept_mastery),
            ):
                database.insert_rows(conn, table, table_rows)
            database.reset_id_sequence(conn)
    finally:
        engine.dispose()
    return rows


def _storable(row: dict[str, Any], postgres: bool, rows: DemoRows) -> dict[str, Any]:
    """PostgreSQL's json type refuses malformed text: that one cell is NULL there."""
    if postgres and ("lessons", "spec", row["id"]) in rows.malformed:
        return {**row, "spec": None}
    return row


def _answer_storable(row: dict[str, Any], postgres: bool) -> dict[str, Any]:
    """`concept_tags` is a `text[]` on PostgreSQL and JSON text on SQLite (contract §1b)."""
    return row if postgres else {**row, "concept_tags": _json(row["concept_tags"])}


def _writable_engine(url: str, *, replace: bool) -> sa.Engine:
    parsed = normalize_url(url)
    path = sqlite_path(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if replace:
            path.unlink(missing_ok=True)
    return sa.create_engine(parsed)
