"""The readable page of one learner's document: one self-contained HTML file a parent (and the
child beside them) can read.

Rendered from the built document, after it went through the one encoder (`plain_document`), so
the page shows exactly what the JSON says; never from a query of its own. Pure: document and
notice in, text out.

Safety, because lesson specs are content the platform stored and may hold anything:
- every piece of text is escaped (`html.escape`) and nothing from the document becomes markup,
  an attribute name, or a link: the page has no `<a>` at all;
- pictures are shown only as `<img src="data:...">`: a spec's base64 image only when it is a
  well-formed `data:image/{png,jpeg,gif,webp};base64,` URL, and inline SVG markup only re-encoded
  as a `data:image/svg+xml;base64,` URL, where browsers run no script and load nothing;
- the page's Content-Security-Policy (`CSP`, also sent as a header by the HTTP route) forbids
  scripts, fetches, fonts and frames: only inline styles and data: images are allowed;
- quiz questions are collapsed with `<details>`, which needs no script.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from html import escape
from typing import Any

import orjson

from transform.encoding import encode_document
from transform.notice import Exclusion, Notice, OperatorNotice, build_notice
from transform.quiz import QuizQuestion, spec_questions, spec_title

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
"""The page's Content-Security-Policy: no script, no request; inline style and data: images."""

MEDIA_TYPE = "text/html; charset=utf-8"
PAGE_START = b"<!doctype html>"
"""How every page begins (what `verify` checks a stored page by)."""

_DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/]+={0,2})", re.ASCII)
_MAX_DEPTH = 64
"""How deep into a spec pictures are looked for (stored JSON nests as the application wrote it)."""

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1.5rem;color:#1d2733;background:#fdfcf8}
h1{color:#23527c;margin-bottom:.2rem}h2{color:#23527c;border-bottom:2px solid #e3e8ee;margin-top:2rem}
.summary{background:#eaf5ea;border:2px solid #9bc89b;border-radius:12px;padding:1rem 1.5rem;font-size:1.2rem}
.summary li{margin:.3rem 0}
.lesson{border:1px solid #dde3ea;border-radius:10px;padding:.6rem 1rem;margin:.8rem 0;background:#fff}
.lesson h3{margin:.2rem 0;color:#2c3e50;overflow-wrap:anywhere}
.meta{color:#4a5866;font-size:.9rem}.status-DONE{color:#1c7c3c}.status-ACTIVE{color:#a35c00}.status-QUEUED{color:#5a6470}
.text{white-space:pre-wrap;overflow-wrap:anywhere;max-height:30rem;overflow:auto}
details{margin:.3rem 0;padding:.2rem .5rem;background:#f5f7fa;border-radius:6px}
.correct{font-weight:bold;color:#1c7c3c}
img{max-width:100%;max-height:20rem;display:block;margin:.5rem 0}
table{border-collapse:collapse}td,th{text-align:left;padding:.2rem .8rem .2rem 0;vertical-align:top;overflow-wrap:anywhere}
.notice li{margin:.2rem 0}.missing{color:#9a3b00;font-style:italic}
footer{margin-top:2rem;color:#4a5866;font-size:.9rem}
"""


TOO_DEEP = "(nested too deeply to show on this page; it is in the JSON file)"
"""Shown for a stored JSON value the parser refuses (orjson stops at 1,024 levels of nesting,
which PostgreSQL's json type does not)."""


def plain_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as plain Python values: its encoded bytes (the one encoder's) parsed again.
    Stored JSON passes through the builder as raw text (`orjson.Fragment`); this is what that
    text says. A stored value too deep to parse becomes TOO_DEEP, the rest is kept."""
    try:
        parsed: dict[str, Any] = orjson.loads(encode_document(dict(document)))
    except orjson.JSONDecodeError:
        return {key: _plain(value) for key, value in document.items()}
    return parsed


def _plain(value: Any) -> Any:
    """One value parsed back; only containers the builder made are split further (a stored
    value is one `orjson.Fragment`), so this recursion is as shallow as the document's shape."""
    try:
        return orjson.loads(orjson.dumps(value))
    except orjson.JSONDecodeError:
        if isinstance(value, Mapping):
            return {key: _plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [_plain(item) for item in value]
        return TOO_DEEP


def page_for(
    document: Mapping[str, Any], operator: OperatorNotice, left_out: Iterable[Exclusion] = ()
) -> bytes:
    """The page (UTF-8) of one built document, with that document's own notice: what the CLI,
    the HTTP route, the family bundle and the archive all write."""
    plain = plain_document(document)
    return render_page(plain, build_notice([plain], operator, left_out=left_out)).encode("utf-8")


def render_page(document: Mapping[str, Any], notice: Notice) -> str:
    """The whole page for one plain document (`plain_document`), with its notice.

    Invariants: no `<script>`, no URL but `data:image/...` ones, every text escaped.
    """
    learner = document.get("learner") or {}
    who = _text(learner.get("name") or learner.get("username") or f"learner {learner.get('id')}")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>Learning data of {who}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f'<h1>The learning data of <bdi dir="auto">{who}</bdi></h1>',
        *_summary(document),
        *_profile(document),
        *_lessons(document.get("lessons") or []),
        *_achievements(document.get("achievements") or []),
        *notice_html(notice),
        _footer(document),
        "</body></html>",
    ]
    return "\n".join(parts)


# --- the child's summary ------------------------------------------------------------------------


def summary_lines(document: Mapping[str, Any]) -> list[str]:
    """Plain sentences a child can follow, from the lessons and achievements (unescaped)."""
    lessons = [x for x in document.get("lessons") or [] if isinstance(x, Mapping)]
    done = [x for x in lessons if x.get("status") == "DONE"]
    lines = []
    if done:
        lines.append(f"You finished {len(done)} {_plural(len(done), 'lesson')}.")
    else:
        lines.append("You have not finished a lesson yet.")
    best = best_subject(done)
    if best is not None:
        subject, average = best
        lines.append(
            f"Your best subject was {subject}: your average score there was {average} out of 100."
        )
    busy = [x for x in lessons if x.get("status") in ("ACTIVE", "QUEUED")]
    if busy:
        waiting = "lesson is" if len(busy) == 1 else "lessons are"
        lines.append(f"{len(busy)} more {waiting} waiting for you.")
    badges = len(document.get("achievements") or [])
    if badges:
        lines.append(f"You earned {badges} {_plural(badges, 'badge')}.")
    return lines


def best_subject(done: Sequence[Mapping[str, Any]]) -> tuple[str, int] | None:
    """The subject with the highest average score over finished lessons that have a score and a
    subject, and that average rounded to a whole number; ties go to the first name in order."""
    scores: dict[str, list[int]] = {}
    for lesson in done:
        score, subject = lesson.get("score"), lesson.get("subject")
        if isinstance(score, int) and not isinstance(score, bool) and isinstance(subject, str):
            scores.setdefault(subject, []).append(score)
    if not scores:
        return None
    averages = {subject: sum(v) / len(v) for subject, v in scores.items()}
    subject = min(averages, key=lambda s: (-averages[s], s))
    return subject, round(averages[subject])


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


def _summary(document: Mapping[str, Any]) -> Iterator[str]:
    yield '<section class="summary"><h2>In short</h2><ul>'
    for line in summary_lines(document):
        yield f'<li dir="auto">{_text(line)}</li>'
    yield "</ul></section>"


# --- sections -----------------------------------------------------------------------------------


def _profile(document: Mapping[str, Any]) -> Iterator[str]:
    learner = document.get("learner") or {}
    yield "<section><h2>Your account</h2><table>"
    for label, key in (
        ("Account number", "id"),
        ("User name", "username"),
        ("Name", "name"),
        ("E-mail", "email"),
        ("Kind of account", "role"),
        ("Parent's account number", "parentId"),
        ("Made on", "createdAt"),
    ):
        yield _row(label, _date(learner.get(key)) if key == "createdAt" else learner.get(key))
    yield "</table>"
    profile = document.get("profile")
    if not isinstance(profile, Mapping):
        yield "<p>There is no learning profile.</p></section>"
        return
    yield "<h3>Learning profile</h3><table>"
    yield _row("School grade", profile.get("gradeLevel"))
    yield _row("Subjects", _listed(profile.get("subjects")))
    yield _row("Suggested subjects", _listed(profile.get("recommendedSubjects")))
    yield _row("Areas to practise", _listed(profile.get("strugglingAreas")))
    performance = profile.get("subjectPerformance")
    if isinstance(performance, Mapping) and performance:
        yield _row("How each subject is going", _performance(performance))
    graph = profile.get("graph")
    if isinstance(graph, Mapping):
        nodes, edges = graph.get("nodes"), graph.get("edges")
        count = len(nodes) if isinstance(nodes, list) else 0
        links = len(edges) if isinstance(edges, list) else 0
        yield _row(
            "Map of topics",
            f"{count} {_plural(count, 'topic')}, {links} {_plural(links, 'link')} between them",
        )
    yield _row("Made on", _date(profile.get("createdAt")))
    yield "</table></section>"


def _lessons(lessons: Sequence[Any]) -> Iterator[str]:
    yield f"<section><h2>Lessons ({len(lessons)})</h2>"
    if not lessons:
        yield "<p>No lessons yet.</p>"
    for lesson in lessons:
        if isinstance(lesson, Mapping):
            yield from _lesson(lesson)
    yield "</section>"


def _lesson(lesson: Mapping[str, Any]) -> Iterator[str]:
    spec = lesson.get("spec")
    title = spec_title(spec) or lesson.get("subject") or "Lesson"
    status = str(lesson.get("status"))
    status_class = status if status in ("DONE", "ACTIVE", "QUEUED") else "other"
    yield f'<article class="lesson"><h3 dir="auto">{_text(title)}</h3><p class="meta">'
    facts = [
        ("Subject", lesson.get("subject")),
        ("Level", lesson.get("difficulty")),
        ("Score", lesson.get("score")),
        ("Started", _date(lesson.get("createdAt"))),
        ("Finished", _date(lesson.get("completedAt"))),
    ]
    yield f'<span class="status-{status_class}">{_text(_STATUS.get(status, status))}</span>'
    for label, value in facts:
        if value is not None:
            yield f" · {label}: <bdi>{_text(value)}</bdi>"
    yield "</p>"
    if isinstance(spec, Mapping):
        yield from _spec(spec)
    yield "</article>"


_STATUS = {"DONE": "Finished", "ACTIVE": "Doing now", "QUEUED": "Waiting"}


def _spec(spec: Mapping[str, Any]) -> Iterator[str]:
    summary = spec.get("summary")
    if isinstance(summary, str):
        yield f'<p class="text" dir="auto">{_text(summary)}</p>'
    objectives = spec.get("learningObjectives")
    if isinstance(objectives, list) and objectives:
        yield f'<p dir="auto">Goals: {_text(_listed(objectives))}</p>'
    sections = spec.get("sections")
    if isinstance(sections, list) and sections:
        yield "<details><summary>Lesson text</summary>"
        for section in sections:
            if not isinstance(section, Mapping):
                continue
            if isinstance(section.get("title"), str):
                yield f'<h4 dir="auto">{_text(section["title"])}</h4>'
            if isinstance(section.get("content"), str):
                yield f'<p class="text" dir="auto">{_text(section["content"])}</p>'
        yield "</details>"
    for source in _pictures(spec):
        yield f'<img alt="A picture from the lesson" src="{source}">'
    questions = spec_questions(spec)
    if questions:
        yield f"<p>Quiz: {len(questions)} {_plural(len(questions), 'question')}</p>"
        for question in questions:
            yield from _question(question)


def _question(question: QuizQuestion) -> Iterator[str]:
    text = question.question if question.question is not None else "(no question text)"
    yield (
        f'<details><summary dir="auto">Question {question.index + 1}: {_text(text)}</summary><ol>'
    )
    for position, option in enumerate(question.options or []):
        mark = ' class="correct"' if position == question.correct_index else ""
        note = " (right answer)" if position == question.correct_index else ""
        yield f'<li dir="auto"{mark}>{_text(option if option is not None else "")}{note}</li>'
    yield "</ol>"
    if question.explanation is not None:
        yield f'<p dir="auto">Why: {_text(question.explanation)}</p>'
    yield "</details>"


def _achievements(achievements: Sequence[Any]) -> Iterator[str]:
    yield f"<section><h2>Badges ({len(achievements)})</h2>"
    if not achievements:
        yield "<p>No badges yet.</p>"
    else:
        yield "<ul>"
    for achievement in achievements:
        if not isinstance(achievement, Mapping):
            continue
        payload = achievement.get("payload")
        payload = payload if isinstance(payload, Mapping) else {}
        title = payload.get("title") if isinstance(payload.get("title"), str) else None
        description = payload.get("description")
        line = _text(title or achievement.get("type"))
        if isinstance(description, str):
            line += f": {_text(description)}"
        yield f'<li dir="auto">{line} <span class="meta">({_text(_date(achievement.get("earnedAt")))})</span></li>'
    if achievements:
        yield "</ul>"
    yield "</section>"


def notice_html(notice: Notice) -> Iterator[str]:
    """The notice's section of a page (GDPR Art. 15 information)."""
    yield '<section class="notice"><h2>About this data (your rights)</h2><table>'
    yield _row("Who is responsible", notice.controller)
    yield _row("Whom to contact", notice.contact)
    yield _row("Why it is kept", _listed(notice.purposes))
    yield _row("Who receives it", _listed(notice.recipients))
    yield _row("Where it comes from", notice.source)
    yield _row("How long it is kept", " ".join(notice.retention))
    yield "</table><h3>What this export holds</h3><ul>"
    for category in notice.categories:
        yield f"<li><b>{_text(category.title)}</b>: {_text(category.details)}</li>"
    yield "</ul>"
    if notice.left_out:
        yield "<h3>What the platform stores that this export leaves out, and why</h3><ul>"
        for left in notice.left_out:
            yield f"<li><code>{_text(left.where)}</code>: {_text(left.reason)}</li>"
        yield "</ul>"
    yield "<h3>Your rights</h3><ul>"
    for right in notice.rights:
        yield f"<li>{_text(right)}</li>"
    yield "</ul></section>"


def _footer(document: Mapping[str, Any]) -> str:
    asked = document.get("exportedBy")
    by = "a scheduled export" if asked is None else f"account number {asked}"
    return (
        f"<footer>This page was made on {_text(_date(document.get('exportDate')))} (UTC), "
        f"asked for by {_text(by)}. The same data, complete, is in the JSON file of this export."
        "</footer>"
    )


# --- values -------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    """Any value as escaped text: strings as they are, anything else as compact JSON."""
    if value is None:
        return "—"
    if not isinstance(value, str):
        value = _compact(value)
    return escape(value, quote=True)


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _row(label: str, value: Any) -> str:
    shown = _text(value)
    if value == "not configured by the operator":
        shown = f'<span class="missing">{shown}</span>'
    return f'<tr><th>{escape(label)}</th><td dir="auto">{shown}</td></tr>'


def _listed(value: Any) -> str | None:
    if isinstance(value, list | tuple):
        return ", ".join(v if isinstance(v, str) else _compact(v) for v in value) or None
    return None if value is None else _compact(value)


_PERFORMANCE_WORDS = {"averageScore": "average score", "lessonsCompleted": "lessons finished"}
"""The platform's figures of a subject, in words a parent reads (others: `_words`)."""


def _performance(performance: Mapping[str, Any]) -> str:
    """`{"Math": {"averageScore": 51, ...}}` as `Math (average score 51, ...)`, one per subject."""
    parts = []
    for subject, value in performance.items():
        if isinstance(value, Mapping):
            inner = ", ".join(
                f"{_PERFORMANCE_WORDS.get(key, _words(key))} {_compact(v)}"
                for key, v in value.items()
            )
            parts.append(f"{subject} ({inner})")
        else:
            parts.append(f"{subject}: {_compact(value)}")
    return "; ".join(parts)


def _words(key: Any) -> str:
    """A camelCase key as lower-case words (`timeSpentMinutes` -> `time spent minutes`); any
    other text unchanged."""
    text = str(key)
    if not text.isascii() or not text.isalnum():
        return text
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", text).lower()


def _date(value: Any) -> str | None:
    """`2024-01-15T10:30:00.000Z` as `2024-01-15 10:30`; anything else unchanged."""
    if isinstance(value, str) and len(value) >= 16 and value[10:11] == "T":
        return f"{value[:10]} {value[11:16]}"
    return value if value is None or isinstance(value, str) else str(value)


def _pictures(spec: Any, depth: int = 0) -> Iterator[str]:
    """The data: URLs of the pictures anywhere in a spec, in document order: well-formed base64
    images of an allowed type as they are, SVG markup re-encoded as base64 (never markup)."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(spec, str):
        picture = picture_url(spec)
        if picture is not None:
            yield picture
    elif isinstance(spec, Mapping):
        for value in spec.values():
            yield from _pictures(value, depth + 1)
    elif isinstance(spec, list):
        for value in spec:
            yield from _pictures(value, depth + 1)


def picture_url(value: str) -> str | None:
    """A safe `data:image/...;base64,` URL for a stored string that is a picture, else None.

    Only base64 data: URLs of PNG, JPEG, GIF or WebP whose payload decodes, and SVG markup (shown
    through an `<img>`, where scripts do not run). The result holds only `[A-Za-z0-9+/=:;,/]`
    characters, so it cannot leave its attribute.
    """
    stripped = value.strip()
    match = _DATA_IMAGE.fullmatch(stripped)
    if match is not None:
        try:
            base64.b64decode(match.group(2), validate=True)
        except (binascii.Error, ValueError):
            return None
        return stripped
    if stripped[:4].lower() == "<svg" or (
        stripped[:5].lower() == "<?xml" and "<svg" in stripped[:512].lower()
    ):
        encoded = base64.b64encode(stripped.encode("utf-8", "replace")).decode("ascii")
        return f"data:image/svg+xml;base64,{encoded}"
    return None
