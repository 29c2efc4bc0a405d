"""The Art. 15 notice: what the export holds and what the person may do about it, in plain words.

GDPR Art. 15(1) asks for the purposes of processing, the categories of data, the recipients, the
retention period, the person's rights and the source of the data; Art. 12 asks for it in clear and
plain language, for a child where the data is a child's. Two kinds of facts go into it:

- what the export itself shows (the categories of data, the source tables, what is left out): derived
  here from the built documents and the coverage registry's decisions, never typed by hand;
- what only the operator knows (controller, contact, purposes, recipients, retention): taken from
  the operator's configuration (`OperatorNotice`), and shown as NOT_CONFIGURED where it says nothing.
  Nothing is ever invented in its place.

Pure: documents and settings in, a `Notice` out (its `as_json` is `notice.json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NOT_CONFIGURED = "not configured by the operator"
"""What the notice says where the operator's configuration is silent."""

NOTICE_FORMAT = "learner-export-notice/1"

SOURCE = (
    "The learning platform's own database, read at the moment of the export: the tables users, "
    "learner_profiles, lessons and achievements. Nothing is added from anywhere else."
)

RIGHTS = (
    "You may ask for a copy of this data at any time (GDPR Art. 15), and get it in a form a "
    "computer can read: the JSON files in this export (Art. 20).",
    "You may ask for wrong data to be corrected (Art. 16) and for data to be deleted (Art. 17).",
    "You may ask for its use to be limited (Art. 18) and object to its use (Art. 21).",
    "For a child under 13 in the United States, a parent may review the child's data, have it "
    "deleted and refuse its further collection (COPPA, 16 CFR 312.6).",
    "You may complain to a data protection authority.",
)


@dataclass(frozen=True, slots=True)
class OperatorNotice:
    """What only the operator can say. Empty fields are shown as NOT_CONFIGURED."""

    controller: str | None = None
    contact: str | None = None
    purposes: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    retention: str | None = None
    archive_keep: int | None = None
    """The `--keep` of the operator's scheduled archive: how many snapshots it keeps."""

    def missing(self) -> list[str]:
        """The names of the fields the operator left empty, in notice order."""
        present = {
            "controller": self.controller,
            "contact": self.contact,
            "purposes": self.purposes,
            "recipients": self.recipients,
            "retention": self.retention,
        }
        return [name for name, value in present.items() if not value]


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A learner-linked table or column the export leaves out, and why (the coverage registry)."""

    table: str
    column: str | None
    reason: str

    @property
    def where(self) -> str:
        return self.table if self.column is None else f"{self.table}.{self.column}"


@dataclass(frozen=True, slots=True)
class Category:
    """One category of data the export holds: a plain title and what it covers, with counts."""

    title: str
    details: str


@dataclass(frozen=True, slots=True)
class Notice:
    """The notice of one export (one learner, or a family's children together)."""

    controller: str
    contact: str
    purposes: tuple[str, ...]
    recipients: tuple[str, ...]
    categories: tuple[Category, ...]
    source: str
    retention: tuple[str, ...]
    rights: tuple[str, ...]
    left_out: tuple[Exclusion, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        """`notice.json`: keys in notice order, every value text or a list of text."""
        return {
            "format": NOTICE_FORMAT,
            "controller": self.controller,
            "contact": self.contact,
            "purposes": list(self.purposes),
            "recipients": list(self.recipients),
            "categories": [{"title": c.title, "details": c.details} for c in self.categories],
            "source": self.source,
            "retention": list(self.retention),
            "rights": list(self.rights),
            "leftOut": [{"where": e.where, "reason": e.reason} for e in self.left_out],
        }


def build_notice(
    documents: Sequence[Mapping[str, Any]],
    operator: OperatorNotice,
    *,
    left_out: Iterable[Exclusion] = (),
) -> Notice:
    """The notice for `documents` (parsed JSON documents, contract §2).

    Categories name only what at least one of the documents holds, with counts taken from them.
    """
    return Notice(
        controller=operator.controller or NOT_CONFIGURED,
        contact=operator.contact or NOT_CONFIGURED,
        purposes=operator.purposes or (NOT_CONFIGURED,),
        recipients=operator.recipients or (NOT_CONFIGURED,),
        categories=tuple(categories(documents)),
        source=SOURCE,
        retention=_retention(operator),
        rights=RIGHTS,
        left_out=tuple(left_out),
    )


def _retention(operator: OperatorNotice) -> tuple[str, ...]:
    platform = operator.retention or NOT_CONFIGURED
    if operator.archive_keep is None:
        archive = NOT_CONFIGURED
    else:
        archive = (
            f"the operator's archive keeps the {operator.archive_keep} newest snapshots of "
            "exports and deletes older ones"
        )
    return (f"On the platform: {platform}.", f"Archived copies of exports: {archive}.")


_LEARNER_FIELDS = {
    "username": "user name",
    "email": "e-mail address",
    "name": "name",
    "role": "kind of account",
    "parentId": "link to the parent's account",
    "createdAt": "when the account was made",
}


def categories(documents: Sequence[Mapping[str, Any]]) -> list[Category]:
    """The categories of data the documents hold, in document order; a category none of them
    holds is not named."""
    found: list[Category] = []
    held = [label for key, label in _LEARNER_FIELDS.items() if _any(documents, "learner", key)]
    if held:
        found.append(Category("Account", ", ".join(["account number", *held])))
    profiles = [d["profile"] for d in documents if isinstance(d.get("profile"), Mapping)]
    if profiles:
        found.append(
            Category(
                "Learning profile",
                "school grade, subjects, how well each subject is going, suggested subjects, "
                "areas to practise, and the map of topics learned",
            )
        )
    lessons = [lesson for d in documents for lesson in d.get("lessons") or ()]
    if lessons:
        found.append(Category("Lessons", _lesson_details(lessons)))
    achievements = sum(len(d.get("achievements") or ()) for d in documents)
    if achievements:
        found.append(Category("Achievements", f"{achievements} badges earned, with when"))
    found.append(
        Category("About this export", "when it was made and the account number of who asked")
    )
    return found


def _lesson_details(lessons: Sequence[Mapping[str, Any]]) -> str:
    subjects = sorted({str(s) for s in (lesson.get("subject") for lesson in lessons) if s})
    parts = [f"{len(lessons)} lessons"]
    if subjects:
        parts.append(f"in {', '.join(subjects)}")
    parts.append("with their status and dates")
    if any(lesson.get("score") is not None for lesson in lessons):
        parts.append("scores")
    specs = [lesson.get("spec") for lesson in lessons if lesson.get("spec") is not None]
    if specs:
        parts.append("the lesson content the platform stored (text, quiz questions and answers)")
    if any(_holds_image(spec) for spec in specs):
        parts.append("pictures inside lesson content")
    if any(lesson.get("imagePaths") for lesson in lessons):
        parts.append("names of lesson picture files")
    return ", ".join(parts)


def _any(documents: Sequence[Mapping[str, Any]], part: str, key: str) -> bool:
    for document in documents:
        section = document.get(part)
        if isinstance(section, Mapping) and section.get(key) is not None:
            return True
    return False


_IMAGE_PREFIXES = ("data:image/", "<svg")


def _holds_image(value: Any, depth: int = 0) -> bool:
    """True when a string anywhere in `value` is an inline image (a data: URL or SVG markup)."""
    if depth > 64:  # stored JSON nests as deep as the application wrote it; pictures sit shallow
        return False
    if isinstance(value, str):
        return value.lstrip()[:11].lower().startswith(_IMAGE_PREFIXES)
    if isinstance(value, Mapping):
        return any(_holds_image(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_holds_image(v, depth + 1) for v in value)
    return False
