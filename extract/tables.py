"""The four source tables exactly as contract §1 declares them.

These are declarations of what the exporter reads; the exporter never creates or alters them (the
demo generator and the restore command use the same `metadata` to build databases of their own).
A real platform database has more tables and columns: SQLAlchemy Core only names what is declared
here, so the rest is ignored.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

USER_ROLES = ("ADMIN", "PARENT", "LEARNER")
LESSON_STATUSES = ("QUEUED", "ACTIVE", "DONE")

# PostgreSQL enums `user_role` and `lesson_status`; on SQLite they are plain TEXT, as the contract
# says, so no CHECK constraint: the exporter must read whatever text the application stored.
user_role = sa.Enum(*USER_ROLES, name="user_role", create_constraint=False, validate_strings=False)
lesson_status = sa.Enum(
    *LESSON_STATUSES, name="lesson_status", create_constraint=False, validate_strings=False
)
# `json` (not jsonb) on PostgreSQL: the stored text is kept verbatim, which lets the exporter pass
# it through unchanged. On SQLite the column is TEXT holding whatever the application wrote.
json_text = sa.JSON().with_variant(sa.Text(), "sqlite")
# UUIDs are text with dashes on SQLite (as the platform writes them), native `uuid` on PostgreSQL.
uuid_text = sa.Uuid(as_uuid=False).with_variant(sa.String(36), "sqlite")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String, unique=True, nullable=True),
    sa.Column("username", sa.Text, unique=True, nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("role", user_role, nullable=False, server_default="LEARNER"),
    sa.Column("password", sa.Text, nullable=True),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("users.id"), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=False), server_default=sa.func.now()),
)

learner_profiles = sa.Table(
    "learner_profiles",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("grade_level", sa.Integer, nullable=False),
    sa.Column("graph", json_text, nullable=True),
    sa.Column("subjects", json_text),
    sa.Column("subject_performance", json_text),
    sa.Column("recommended_subjects", json_text),
    sa.Column("struggling_areas", json_text),
    sa.Column("created_at", sa.DateTime(timezone=False), server_default=sa.func.now()),
    sa.Index("learner_profiles_user_idx", "user_id"),
)

lessons = sa.Table(
    "lessons",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("learner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("template_id", uuid_text, nullable=True),
    sa.Column("module_id", sa.Text, nullable=True),
    sa.Column("status", lesson_status, nullable=False, server_default="QUEUED"),
    sa.Column("subject", sa.Text, nullable=True),
    sa.Column("category", sa.Text, nullable=True),
    sa.Column("difficulty", sa.Text, nullable=True),
    sa.Column("image_paths", json_text, nullable=True),
    sa.Column("spec", json_text, nullable=True),
    sa.Column("score", sa.Integer, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=False), server_default=sa.func.now()),
    sa.Column("completed_at", sa.DateTime(timezone=False), nullable=True),
    sa.Index("lessons_learner_created_idx", "learner_id", "created_at"),
)

achievements = sa.Table(
    "achievements",
    metadata,
    sa.Column("id", uuid_text, primary_key=True),
    sa.Column("learner_id", sa.String, nullable=False),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("payload", json_text, nullable=True),
    sa.Column("awarded_at", sa.DateTime(timezone=False), server_default=sa.func.now()),
    sa.Index("achievements_learner_idx", "learner_id"),
)

# --- the platform's optional tables (contract §1b): read for the analyst tables only ------------

optional_metadata = sa.MetaData()
"""The optional tables, apart from `metadata`: a source may lack them, so nothing that builds or
restores the four tables creates them (the demo does, for the analyst tables)."""

# `text[]` on PostgreSQL, JSON text on SQLite.
text_array = sa.ARRAY(sa.Text).with_variant(sa.Text(), "sqlite")

quiz_answers = sa.Table(
    "quiz_answers",
    optional_metadata,
    sa.Column("id", uuid_text, primary_key=True),
    sa.Column("learner_id", sa.Integer, nullable=False),  # -> users.id (in the other metadata)
    sa.Column("lesson_id", sa.Text, nullable=False),  # -> lessons.id
    sa.Column("question_index", sa.Integer, nullable=False),
    sa.Column("question_text", sa.Text, nullable=False),
    sa.Column("question_hash", sa.String(64), nullable=False),
    sa.Column("user_answer", sa.Integer, nullable=False),
    sa.Column("correct_answer", sa.Integer, nullable=False),
    sa.Column("is_correct", sa.Boolean, nullable=False),
    sa.Column("concept_tags", text_array, nullable=True),
    sa.Column("answered_at", sa.DateTime(timezone=False), server_default=sa.func.now()),
    sa.Index("quiz_answers_learner_idx", "learner_id"),
)

concept_mastery = sa.Table(
    "concept_mastery",
    optional_metadata,
    sa.Column("id", uuid_text, primary_key=True),
    sa.Column("learner_id", sa.Integer, nullable=False),  # -> users.id
    sa.Column("concept_name", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("correct_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("total_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("mastery_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_tested", sa.DateTime(timezone=False)),
    sa.Column("needs_reinforcement", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=False), server_default=sa.func.now()),
    sa.Index("concept_mastery_learner_idx", "learner_id"),
)

OPTIONAL_TABLES = {"quiz_answers": quiz_answers, "concept_mastery": concept_mastery}
"""The optional source tables by name."""

JSON_COLUMNS = {
    "learner_profiles": (
        "graph",
        "subjects",
        "subject_performance",
        "recommended_subjects",
        "struggling_areas",
    ),
    "lessons": ("image_paths", "spec"),
    "achievements": ("payload",),
}
"""Columns holding JSON, by table: read as raw text and passed through, or reported if malformed."""
