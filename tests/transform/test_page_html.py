"""The readable page: escaped text, pictures only as data: images, a CSP that forbids scripts,
checked on the markup and in a real headless chromium (demo learners and hostile specs)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from learner_export.bundle import page_bytes
from tests.browser import distinct_colours, render
from transform.notice import NOT_CONFIGURED, OperatorNotice, build_notice
from transform.page_html import (
    CSP,
    TOO_DEEP,
    best_subject,
    page_for,
    picture_url,
    plain_document,
    render_page,
    summary_lines,
)

RAN = "document.body.setAttribute('data-ran','yes')"
"""What every hostile script does if it runs: a mark the DOM after load would show."""

PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def _lesson(index: int, spec: Any, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"lesson-{index}", "learnerId": 3, "moduleId": None, "status": "DONE",
        "subject": "Math", "category": None, "difficulty": "beginner", "score": 80,
        "spec": spec, "imagePaths": [], "templateId": None,
        "createdAt": "2024-01-15T10:30:00.000Z", "completedAt": "2024-01-15T10:50:00.000Z",
        **fields,
    }  # fmt: skip


def _document(lessons: list[dict[str, Any]], name: str = "Ada") -> dict[str, Any]:
    return {
        "learner": {
            "id": 3, "username": "ada", "email": None, "name": name, "role": "LEARNER",
            "parentId": 1, "createdAt": "2023-01-01T00:00:00.000Z",
        },
        "profile": None,
        "lessons": lessons,
        "achievements": [
            {"id": "a1", "learnerId": "3", "type": "<b>X</b>", "earnedAt": None,
             "payload": {"title": f"<img src=x onerror=\"{RAN}\">", "description": "🌟"}},
        ],
        "exportDate": "2024-02-01T00:00:00.000Z",
        "exportedBy": 1,
    }  # fmt: skip


HOSTILE_SVG = f'<svg xmlns="http://www.w3.org/2000/svg" onload="{RAN}"><script>{RAN}</script><circle r="5"/></svg>'


def _hostile_document() -> dict[str, Any]:
    script = f"<script>{RAN}</script>"
    svg_url = "data:image/svg+xml;base64," + base64.b64encode(HOSTILE_SVG.encode()).decode()
    lessons = [
        _lesson(0, {"title": script, "summary": f"</p>{script}<p>", "questions": [
            {"question": f"<img src=x onerror=\"{RAN}\">", "options": [script, "javascript:alert(1)"],
             "correctIndex": 1, "explanation": "<iframe src='http://evil.invalid/'></iframe>"},
        ]}),
        _lesson(1, {"title": "Pictures", "image": "javascript:alert(1)", "icon": HOSTILE_SVG,
                    "svgUrl": svg_url, "png": f"data:image/png;base64,{PNG_1PX}",
                    "html": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
                    "remote": "http://images.invalid/a.png",
                    "quoted": f'data:image/png;base64,{PNG_1PX}" onerror="{RAN}'}),
        _lesson(2, {"title": "Long", "summary": "x" * 1_000_000}, subject="<style>*{display:none}</style>"),
        _lesson(3, {"title": "مرحبا بالعالم 👋🏽", "sections": [{"title": "שלום", "content": "🦄🌈"}]}),
        _lesson(4, "a spec that is a string <script>", status="ACTIVE", score=None),
        _lesson(5, [1, {"questions": "not a list"}], status="<b>odd</b>"),
    ]  # fmt: skip
    return _document(lessons, name="‏سارة 🐱 <script>")


def _page(document: dict[str, Any]) -> str:
    notice = build_notice([document], OperatorNotice())
    return render_page(document, notice)


def test_nothing_from_the_document_becomes_markup() -> None:
    html = _page(_hostile_document())
    assert html.count("<script") == 0
    assert "onerror=" not in html.replace("onerror=&quot;", "")  # only as escaped text
    assert "<iframe" not in html and "<svg" not in html
    assert "javascript:" not in re.sub(r">[^<]*<", "><", html)  # never inside a tag
    urls = re.findall(r'src="([^"]*)"', html)
    assert urls and all(
        u.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for u in urls
    )
    assert not re.search(r"\b(href|action|formaction|srcset|background)=", html)
    assert "&lt;script&gt;" in html  # the hostile text is shown, as text
    assert (
        f'<meta http-equiv="Content-Security-Policy" content="{CSP.replace(chr(39), "&#x27;")}">'
        in html
    )


def test_pictures_are_data_urls_of_allowed_types_only() -> None:
    assert picture_url(f"data:image/png;base64,{PNG_1PX}") == f"data:image/png;base64,{PNG_1PX}"
    svg = picture_url(HOSTILE_SVG)
    assert svg is not None and base64.b64decode(svg.split(",", 1)[1]).decode() == HOSTILE_SVG
    for refused in (
        "javascript:alert(1)", "data:text/html;base64,PHA+", "data:image/png;base64,@@@",
        f'data:image/png;base64,{PNG_1PX}" onerror="x', "http://images.invalid/a.png",
        "data:image/svg+xml;utf8,<svg/>", "data:image/png;base64,abc",
    ):  # fmt: skip
        assert picture_url(refused) is None, refused


def test_the_summary_a_child_can_follow() -> None:
    lessons = [
        _lesson(0, None, subject="Math", score=90),
        _lesson(1, None, subject="Math", score=70),
        _lesson(2, None, subject="Art", score=79),
        _lesson(3, None, subject="Art", score=None),
        _lesson(4, None, status="QUEUED", score=None),
    ]
    assert best_subject([x for x in lessons if x["status"] == "DONE"]) == ("Math", 80)
    assert summary_lines(_document(lessons)) == [
        "You finished 4 lessons.",
        "Your best subject was Math: your average score there was 80 out of 100.",
        "1 more lesson is waiting for you.",
        "You earned 1 badge.",
    ]
    tie = [_lesson(0, None, subject="Math", score=50), _lesson(1, None, subject="Art", score=50)]
    assert best_subject(tie) == ("Art", 50)  # a tie goes to the first name
    assert summary_lines(_document([]))[0] == "You have not finished a lesson yet."


def test_the_profile_reads_in_words() -> None:
    """Subject figures and the map of topics in words a parent reads, not the platform's keys."""
    document = _document([])
    document["profile"] = {
        "gradeLevel": 5,
        "subjectPerformance": {
            "Math": {"averageScore": 85, "lessonsCompleted": 12, "timeSpentMinutes": 40},
            "Art": 3,
        },
        "graph": {"nodes": [{"id": "a"}, {"id": "b"}], "edges": [{"source": "a", "target": "b"}]},
    }
    page = _page(document)
    assert "Math (average score 85, lessons finished 12, time spent minutes 40); Art: 3" in page
    assert "averageScore" not in page and "lessonsCompleted" not in page
    assert "2 topics, 1 link between them" in page


def test_quiz_questions_are_collapsed_with_the_right_answer_marked() -> None:
    spec = {"questions": [{"question": "2+2?", "options": ["3", "4"], "correctIndex": 1}]}
    html = _page(_document([_lesson(0, spec)]))
    assert '<details><summary dir="auto">Question 1: 2+2?</summary><ol>' in html
    assert '<li dir="auto" class="correct">4 (right answer)</li>' in html


def test_every_demo_learner_has_a_page(sqlite_exports: dict[int, bytes]) -> None:
    for learner_id, data in sqlite_exports.items():
        document = orjson.loads(data)
        html = page_bytes(document, OperatorNotice()).decode()
        assert "<script" not in html
        assert html.count('<article class="lesson">') == len(document["lessons"]), learner_id
        assert NOT_CONFIGURED in html


def test_plain_document_parses_stored_json() -> None:
    fragment = {"spec": orjson.Fragment(b'{"title":"T"}')}
    assert plain_document(fragment) == {"spec": {"title": "T"}}


def test_a_stored_value_too_deep_to_parse_spoils_only_itself() -> None:
    """PostgreSQL's json type takes any depth; orjson stops at 1,024 levels."""
    deep = orjson.Fragment(b"[" * 1100 + b"]" * 1100)
    document = _document([_lesson(0, deep), _lesson(1, orjson.Fragment(b'{"title":"Fine"}'))])
    plain = plain_document(document)
    assert [lesson["spec"] for lesson in plain["lessons"]] == [TOO_DEEP, {"title": "Fine"}]
    html = page_for(document, OperatorNotice()).decode()
    assert "Fine" in html and html.count('<article class="lesson">') == 2


def test_hostile_page_in_a_real_browser(tmp_path: Path) -> None:
    page = tmp_path / "hostile.html"
    page.write_text(_page(_hostile_document()), encoding="utf-8")
    seen = render(page, height=1200)
    assert seen.requests == ()
    assert 'data-ran="yes"' not in seen.dom  # no script ran: not the tags, handlers, nor SVG's
    assert distinct_colours(seen.png) > 8
    assert "&lt;script&gt;document.body" in seen.dom, seen.console[-3000:]  # shown as text
    assert "مرحبا بالعالم 👋🏽" in seen.dom


@pytest.mark.parametrize("learner", [3])
def test_demo_page_in_a_real_browser(
    sqlite_exports: dict[int, bytes], tmp_path: Path, learner: int
) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(page_bytes(orjson.loads(sqlite_exports[learner]), OperatorNotice()))
    seen = render(page)
    assert seen.requests == ()
    assert distinct_colours(seen.png) > 16
    assert "You finished" in seen.dom
    assert 'src="data:image/png;base64,' in seen.dom  # the demo's inline picture is shown
