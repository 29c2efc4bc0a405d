"""The analyst report's figures: the snapshot's tables aggregated, small cells suppressed.

Pure: pandas frames in (`ReportFrames`, made from the tables' Arrow columns by `frames`),
`Figure`s out; no I/O, no clock. Every figure is a list of rows, one row per cell (a subject, a
week and subject, a topic...), and a row carries the number of distinct learners behind it.

The privacy rule lives here and only here: a row whose cell holds fewer than `min_cell`
distinct learners (counted by pseudonym) is suppressed: its values are dropped (None), so no
renderer, table or plot can show them. A ranking ("hardest topics") ranks only rows that are
shown, so a suppressed cell does not even get a place. Nothing that names a learner (pseudonym,
id) leaves this module: rows are keyed by subject, grade, week, topic, question, type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import pyarrow as pa

DEFAULT_MIN_CELL = 5
TOP = 10
"""Rows of the ranked figures (hardest topics, most-missed questions, weakest concepts)."""

NO_VALUE = "(none)"
"""The key of rows whose grouping column is null (a lesson without a subject, say)."""

TABLE_COLUMNS: dict[str, list[str]] = {
    "learners": ["learner_pseudonym", "run_id", "exported_at"],
    "lessons": [
        "learner_pseudonym", "status", "subject", "score", "spec_grade_level", "topic",
        "created_at", "completed_at",
    ],
    "quiz_questions": ["learner_pseudonym"],
    "quiz_answers": ["learner_pseudonym", "question_hash", "is_correct"],
    "concept_mastery": [
        "learner_pseudonym", "subject", "concept_name", "mastery_level", "needs_reinforcement",
    ],
    "achievements": ["learner_pseudonym", "type", "earned_at"],
}  # fmt: skip
"""The columns the report reads of each analyst table, whole (and nothing else): counts and
groups. The text of the few questions it prints is looked up afterwards (`QuestionText`)."""

DICTIONARY_COLUMNS = ("learner_pseudonym", "question_hash")
"""Columns whose values repeat over many rows, read dictionary-encoded (held once per part)."""

OPTIONAL_TABLES = ("quiz_answers", "concept_mastery")

Kind = Literal["count", "score", "percent", "date", "text"]


@dataclass(frozen=True)
class Measure:
    """A column of a figure: its name (machine), label (people) and how its values print."""

    name: str
    label: str
    kind: Kind


@dataclass(frozen=True)
class Row:
    """One cell of a figure. `values[i]` is the value of the figure's `measures[i]`; all None
    when `suppressed` (fewer than `min_cell` learners: `learners` is then never shown)."""

    key: tuple[str, ...]
    learners: int
    suppressed: bool
    values: tuple[float | int | str | None, ...]


@dataclass(frozen=True)
class Figure:
    """A section of the report: what it shows (`caption`), its rows, and `absent` instead of
    rows when the snapshot lacks the tables it needs."""

    name: str
    title: str
    caption: str
    key_names: tuple[str, ...]
    measures: tuple[Measure, ...]
    rows: tuple[Row, ...] = ()
    absent: str | None = None
    plot: str | None = None
    """How `transform.report_plots` draws it (None: a table only)."""


@dataclass(frozen=True)
class SnapshotFacts:
    """What the report takes from the manifest rather than the tables."""

    run_id: str
    exported_at: str
    truncated_learners: int
    lessons_left_out: int
    """Lessons of truncated learners that are in the tables but not in their documents."""
    skipped_tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportFrames:
    """The snapshot's tables as the report reads them: `learner` is a categorical of the
    pseudonyms (counted, never shown); an optional table the source lacked is None."""

    facts: SnapshotFacts
    learners: pd.DataFrame
    lessons: pd.DataFrame
    questions: pd.DataFrame
    answers: pd.DataFrame | None
    mastery: pd.DataFrame | None
    achievements: pd.DataFrame
    question_texts: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Subject and text of the questions `ranked_questions` names, by question hash (looked up
    by the caller in quiz_answers and quiz_questions, for those questions only)."""


def frames(facts: SnapshotFacts, tables: dict[str, pa.Table | None]) -> ReportFrames:
    """The report's frames from the Arrow tables of `TABLE_COLUMNS` (None: not in the snapshot).
    Pseudonyms become a categorical `learner` column at once (small, and only ever counted)."""

    def frame(name: str) -> pd.DataFrame | None:
        table = tables.get(name)
        if table is None:
            return None
        data = table.to_pandas(types_mapper=_types)
        data.insert(0, "learner", data.pop("learner_pseudonym").astype("category"))
        return data

    def required(name: str) -> pd.DataFrame:
        data = frame(name)
        if data is None:
            raise ValueError(f"the snapshot has no {name} table")
        return data

    return ReportFrames(
        facts=facts,
        learners=required("learners"),
        lessons=required("lessons"),
        questions=required("quiz_questions"),
        answers=frame("quiz_answers"),
        mastery=frame("concept_mastery"),
        achievements=required("achievements"),
    )


def _types(arrow_type: pa.DataType) -> object:
    # Integers with nulls stay integers (nullable Int64), booleans nullable booleans.
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    return None


@dataclass
class _Cells:
    """Rows being built for one figure, with the suppression rule applied as they are added."""

    min_cell: int
    rows: list[Row] = field(default_factory=list)

    def add(self, key: Sequence[str], learners: int, values: Sequence[float | int | str]) -> None:
        small = learners < self.min_cell
        shown = tuple(None if small else v for v in values)
        self.rows.append(Row(tuple(key), int(learners), small, shown))


def build_figures(data: ReportFrames, min_cell: int = DEFAULT_MIN_CELL) -> list[Figure]:
    """Every figure of the report, in the page's order."""
    if min_cell < 1:
        raise ValueError("min_cell must be at least 1")
    scored = data.lessons[data.lessons["score"].notna()]
    return [
        snapshot_figure(data, min_cell),
        score_figure(scored, "subject", "Score distribution by subject", min_cell),
        score_figure(scored, "grade", "Score distribution by grade level", min_cell),
        completed_per_week(data.lessons, min_cell),
        hardest_topics(scored, min_cell),
        missed_questions(data, min_cell),
        weakest_concepts(data, min_cell),
        achievements_per_week(data.achievements, min_cell),
    ]


def headline(data: ReportFrames) -> dict[str, tuple[float | int, int]]:
    """The headline figures compared between snapshots: name -> (value, learners behind it)."""
    lessons = data.lessons
    scored = lessons[lessons["score"].notna()]
    done = lessons[lessons["status"] == "DONE"]
    figures: dict[str, tuple[float | int, int]] = {
        "learners": (len(data.learners), _learners(data.learners)),
        "lessons": (len(lessons), _learners(lessons)),
        "lessons completed": (len(done), _learners(done)),
        "mean score": (float(scored["score"].mean()) if len(scored) else 0.0, _learners(scored)),
        "quiz questions": (len(data.questions), _learners(data.questions)),
        "achievements": (len(data.achievements), _learners(data.achievements)),
    }
    if data.answers is not None:
        figures["answers"] = (len(data.answers), _learners(data.answers))
    return figures


HEADLINE_KINDS: dict[str, Kind] = {"mean score": "score"}


def snapshot_figure(data: ReportFrames, min_cell: int) -> Figure:
    """The snapshot in numbers: counts of each table, the days its lessons span, truncation."""
    cells = _Cells(min_cell)
    for name, (value, learners) in headline(data).items():
        cells.add((name,), learners, (value,))
    created = data.lessons[data.lessons["created_at"].notna()]
    if len(created):
        days = created["created_at"].dt.strftime("%Y-%m-%d")
        cells.add(("first lesson created (day, UTC)",), _learners(created), (days.min(),))
        cells.add(("last lesson created (day, UTC)",), _learners(created), (days.max(),))
    facts = data.facts
    cells.add(("learners whose documents are truncated",), facts.truncated_learners,
              (facts.truncated_learners,))  # fmt: skip
    cells.add(("lessons left out of those documents",), facts.truncated_learners,
              (facts.lessons_left_out,))  # fmt: skip
    return Figure(
        name="snapshot",
        title="The snapshot",
        caption=(
            "Rows of the snapshot's analyst tables (learners, lessons, quiz questions, answers, "
            "achievements), the mean of every lesson score, the days the lessons were created "
            "in, and, from the manifest, the learners with more than 1,000 lessons whose JSON "
            "documents hold only the 1,000 most recent (the tables keep every lesson)."
        ),
        key_names=("figure",),
        measures=(Measure("value", "value", "text"),),  # each row's kind: `row_kind`
        rows=tuple(cells.rows),
    )


def row_kind(figure: Figure, row: Row, measure: Measure) -> Kind:
    """How a value prints: the snapshot figure's one column holds counts, a score and dates."""
    label = row.key[0]
    if figure.name == "compare":
        return HEADLINE_KINDS.get(label, "count")
    if figure.name != "snapshot":
        return measure.kind
    if label.startswith(("first", "last")):
        return "date"
    return HEADLINE_KINDS.get(label, "count")


_SCORE_MEASURES = (
    Measure("learners", "learners", "count"),
    Measure("lessons", "scored lessons", "count"),
    Measure("mean", "mean score", "score"),
    Measure("p25", "25th percentile", "score"),
    Measure("median", "median", "score"),
    Measure("p75", "75th percentile", "score"),
)


def score_figure(scored: pd.DataFrame, by: Literal["subject", "grade"], title: str,
                 min_cell: int) -> Figure:  # fmt: skip
    """Scores of scored lessons by subject, or by the grade the lesson was written for (the
    spec's grade level): mean and quartiles (linear interpolation, as DuckDB's quantile_cont)."""
    keys = _subject_key(scored) if by == "subject" else _grade_key(scored)
    score = scored["score"].astype(float)
    grouped = score.groupby(keys, sort=False)
    table = pd.DataFrame(
        {
            "learners": scored["learner"].groupby(keys, sort=False, observed=True).nunique(),
            "lessons": grouped.size(),
            "mean": grouped.mean(),
            "p25": grouped.quantile(0.25),
            "median": grouped.quantile(0.5),
            "p75": grouped.quantile(0.75),
        }
    )
    cells = _Cells(min_cell)
    for key in _sorted_keys(list(table.index), numeric=by == "grade"):
        line = table.loc[key]
        cells.add((key,), int(line["learners"]), (
            int(line["learners"]), int(line["lessons"]), float(line["mean"]),
            float(line["p25"]), float(line["median"]), float(line["p75"]),
        ))  # fmt: skip
    what = "subject" if by == "subject" else "grade level the lesson was written for"
    return Figure(
        name=f"score_by_{by}",
        title=title,
        caption=(
            f"Scores (0-100) of scored lessons by {what}: the box spans the 25th to the 75th "
            "percentile, the bar inside is the median and the dot the mean (percentiles "
            "interpolated linearly between lessons)."
        ),
        key_names=("subject",) if by == "subject" else ("grade",),
        measures=_SCORE_MEASURES,
        rows=tuple(cells.rows),
        plot="boxes",
    )


def completed_per_week(lessons: pd.DataFrame, min_cell: int) -> Figure:
    """DONE lessons by the UTC week (from Monday) of their completion, and by subject."""
    done = lessons[(lessons["status"] == "DONE") & lessons["completed_at"].notna()]
    return _per_week(
        done, "completed_at", _subject_key(done), min_cell,
        name="completed_per_week",
        title="Lessons completed per week, by subject",
        caption=(
            "Lessons with status DONE, counted by the week (Monday to Sunday, UTC) of their "
            "completion time, one line per subject."
        ),
        second_name="subject", counted=Measure("lessons", "lessons completed", "count"),
    )  # fmt: skip


def achievements_per_week(achievements: pd.DataFrame, min_cell: int) -> Figure:
    """Achievements by the UTC week (from Monday) they were earned in, and by type."""
    earned = achievements[achievements["earned_at"].notna()]
    kinds = earned["type"].fillna(NO_VALUE).astype(str)
    return _per_week(
        earned, "earned_at", kinds, min_cell,
        name="achievements_per_week",
        title="Achievements earned per week, by type",
        caption=(
            "Achievements counted by the week (Monday to Sunday, UTC) they were earned in, "
            "one line per achievement type."
        ),
        second_name="type", counted=Measure("achievements", "achievements", "count"),
    )  # fmt: skip


def _per_week(
    rows: pd.DataFrame,
    column: str,
    second: pd.Series,
    min_cell: int,
    *,
    name: str,
    title: str,
    caption: str,
    second_name: str,
    counted: Measure,
) -> Figure:
    weeks = week_start(rows[column])
    table = _counted(rows, [weeks.rename("week"), second.rename("second")])
    cells = _Cells(min_cell)
    for (week, other), line in table.iterrows():
        cells.add((str(week), str(other)), int(line["learners"]),
                  (int(line["learners"]), int(line["rows"])))  # fmt: skip
    return Figure(
        name=name,
        title=title,
        caption=caption,
        key_names=("week", second_name),
        measures=(Measure("learners", "learners", "count"), counted),
        rows=tuple(cells.rows),
        plot="weeks",
    )


def week_start(times: pd.Series) -> pd.Series:
    """The Monday (UTC) of each timestamp's week, as `YYYY-MM-DD` (DuckDB's date_trunc('week'))."""
    utc = times.dt.tz_convert("UTC")
    monday = utc.dt.normalize() - pd.to_timedelta(utc.dt.day_of_week, unit="D")
    return monday.dt.strftime("%Y-%m-%d")


def hardest_topics(scored: pd.DataFrame, min_cell: int) -> Figure:
    """The topics with the lowest mean score, among topics of at least `min_cell` learners."""
    topics = scored["topic"].fillna(NO_VALUE).astype(str).rename("topic")
    table = _counted(scored, [_subject_key(scored).rename("subject"), topics])
    table["mean"] = (
        scored["score"].astype(float).groupby([_subject_key(scored), topics], sort=True).mean()
    )
    cells = _Cells(min_cell)
    for (subject, topic), line in table.iterrows():
        cells.add((str(subject), str(topic)), int(line["learners"]),
                  (int(line["learners"]), int(line["rows"]), float(line["mean"])))  # fmt: skip
    ranked = _ranked(cells.rows, lambda r: (r.values[2], -int(r.values[1] or 0), r.key))
    return Figure(
        name="hardest_topics",
        title="Hardest topics",
        caption=(
            f"The {TOP} topics (the lesson's title without its subject) with the lowest mean "
            f"score of their scored lessons, among topics taken by at least {min_cell} "
            "learners; the number of lessons behind each bar is written at its end."
        ),
        key_names=("subject", "topic"),
        measures=(
            Measure("learners", "learners", "count"),
            Measure("lessons", "scored lessons", "count"),
            Measure("mean", "mean score", "score"),
        ),
        rows=ranked,
        plot="ranked_mean",
    )


def missed_questions(data: ReportFrames, min_cell: int) -> Figure:
    """The questions most often answered wrong (by the platform's question hash, the same
    question across lessons), among questions answered by at least `min_cell` learners."""
    measures = (
        Measure("learners", "learners", "count"),
        Measure("answers", "answers", "count"),
        Measure("missed", "missed", "count"),
        Measure("missed_share", "missed (%)", "percent"),
    )
    base = Figure(
        name="missed_questions",
        title="Most-missed questions",
        caption=(
            f"The {TOP} quiz questions (recognised across lessons by the platform's question "
            "hash) with the highest share of wrong answers, among questions answered by at "
            f"least {min_cell} learners."
        ),
        key_names=("subject", "question"),
        measures=measures,
        plot="ranked_share",
    )
    if data.answers is None:
        return _absent(base, "quiz_answers")
    cells = _Cells(min_cell)
    for question_hash, line in _question_cells(data.answers, min_cell).head(TOP).iterrows():
        subject, text = data.question_texts.get(str(question_hash), (NO_VALUE, str(question_hash)))
        answered, missed = int(line["rows"]), int(line["missed"])
        cells.add((subject, _short(text)), int(line["learners"]),
                  (int(line["learners"]), answered, missed, 100 * missed / answered))  # fmt: skip
    return Figure(**{**base.__dict__, "rows": tuple(cells.rows)})


def ranked_questions(data: ReportFrames, min_cell: int = DEFAULT_MIN_CELL) -> list[str]:
    """The question hashes the most-missed questions show, in order: those answered by at
    least `min_cell` learners, by share of wrong answers (highest first), then answers (most
    first), then hash. The caller looks up their text (`ReportFrames.question_texts`)."""
    if data.answers is None:
        return []
    return [str(h) for h in _question_cells(data.answers, min_cell).head(TOP).index]


def _question_cells(answers: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """Per question hash answered by at least `min_cell` learners: learners, rows (answers),
    missed and share, in the ranking's order. Suppressed questions are not ranked at all."""
    hashes = answers["question_hash"].rename("hash")
    table = _counted(answers, [hashes])
    table["missed"] = (
        (~answers["is_correct"].astype(bool)).groupby(hashes, sort=True, observed=True).sum()
    )
    table = table[table["learners"] >= min_cell].copy()
    table["share"] = table["missed"] / table["rows"]
    table["by_hash"] = table.index.astype(str)
    return table.sort_values(["share", "rows", "by_hash"], ascending=[False, False, True])


def weakest_concepts(data: ReportFrames, min_cell: int) -> Figure:
    """The concepts with the lowest mean mastery level, among concepts of `min_cell` learners."""
    base = Figure(
        name="weakest_concepts",
        title="Weakest concepts",
        caption=(
            f"The {TOP} concepts with the lowest mean mastery level (0-100, the platform's "
            f"concept_mastery) over the learners tested on them, among concepts of at least "
            f"{min_cell} learners, with the share of those learners flagged for reinforcement."
        ),
        key_names=("subject", "concept"),
        measures=(
            Measure("learners", "learners", "count"),
            Measure("mean", "mean mastery", "score"),
            Measure("reinforce_share", "needs reinforcement (%)", "percent"),
        ),
        plot="ranked_mean",
    )
    if data.mastery is None:
        return _absent(base, "concept_mastery")
    mastery = data.mastery
    keys = [
        _subject_key(mastery).rename("subject"),
        mastery["concept_name"].fillna(NO_VALUE).astype(str).rename("concept"),
    ]
    table = _counted(mastery, keys)
    table["mean"] = mastery["mastery_level"].astype(float).groupby(keys, sort=True).mean()
    table["share"] = mastery["needs_reinforcement"].astype(float).groupby(keys, sort=True).mean()
    cells = _Cells(min_cell)
    for (subject, concept), line in table.iterrows():
        cells.add((str(subject), str(concept)), int(line["learners"]),
                  (int(line["learners"]), float(line["mean"]), 100 * float(line["share"])))  # fmt: skip
    ranked = _ranked(cells.rows, lambda r: (r.values[1], -int(r.values[0] or 0), r.key))
    return Figure(**{**base.__dict__, "rows": ranked})


def _absent(figure: Figure, table: str) -> Figure:
    return Figure(
        **{
            **figure.__dict__,
            "absent": f"The source database had no {table} table, so this snapshot has none "
            "and this section cannot be drawn.",
            "plot": None,
        }
    )


def _ranked(rows: list[Row], order: Callable[[Row], tuple[object, ...]]) -> tuple[Row, ...]:
    """The first TOP shown rows in `order`; suppressed rows are left out, not ranked."""
    return tuple(sorted((r for r in rows if not r.suppressed), key=order)[:TOP])


def _counted(rows: pd.DataFrame, keys: list[pd.Series]) -> pd.DataFrame:
    """Per group of `keys` (sorted): `learners`, the distinct learners, and `rows`."""
    learners = rows["learner"].groupby(keys, sort=True, observed=True)
    return pd.DataFrame({"learners": learners.nunique(), "rows": learners.size()})


def _learners(rows: pd.DataFrame) -> int:
    return int(rows["learner"].nunique())


def _subject_key(rows: pd.DataFrame) -> pd.Series:
    return rows["subject"].fillna(NO_VALUE).astype(str)


def _grade_key(rows: pd.DataFrame) -> pd.Series:
    grades = rows["spec_grade_level"]
    return grades.astype("string").fillna(NO_VALUE).astype(str)


def _sorted_keys(keys: Sequence[str], *, numeric: bool) -> list[str]:
    """Keys in reading order: numbers numerically, the null key last."""

    def order(key: str) -> tuple[int, float, str]:
        if key == NO_VALUE:
            return (2, 0.0, key)
        if numeric and key.lstrip("-").isdigit():
            return (0, float(key), key)
        return (1, 0.0, key)

    return sorted(keys, key=order)


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compare_figure(
    before: ReportFrames, after: ReportFrames, min_cell: int = DEFAULT_MIN_CELL
) -> Figure:
    """The headline figures of two snapshots side by side, and their change (after - before).
    A row is suppressed when either side has fewer than `min_cell` learners behind it."""
    first, second = headline(before), headline(after)
    cells = _Cells(min_cell)
    for name in [n for n in second if n in first]:
        (a, a_learners), (b, b_learners) = first[name], second[name]
        cells.add((name,), min(a_learners, b_learners), (a, b, b - a))
    kind: Kind = "count"
    return Figure(
        name="compare",
        title=f"Compared with snapshot {before.facts.run_id}",
        caption=(
            f"The headline figures of snapshot {before.facts.run_id} (before) and of this "
            f"snapshot {after.facts.run_id} (after), and the change from before to after; a "
            f"figure with fewer than {min_cell} learners behind it on either side is suppressed."
        ),
        key_names=("figure",),
        measures=(
            Measure("before", before.facts.run_id, kind),
            Measure("after", after.facts.run_id, kind),
            Measure("change", "change", kind),
        ),
        rows=tuple(cells.rows),
    )
