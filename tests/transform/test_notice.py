"""The Art. 15 notice: categories from what the documents hold, the operator's facts or
"not configured by the operator", never anything invented."""

from __future__ import annotations

from typing import Any

from transform.notice import NOT_CONFIGURED, Exclusion, OperatorNotice, build_notice, categories


def _document(**parts: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "learner": {"id": 3, "username": "ada", "email": None, "name": None, "role": "LEARNER",
                    "parentId": None, "createdAt": None},
        "profile": None, "lessons": [], "achievements": [],
        "exportDate": "2024-02-01T00:00:00.000Z", "exportedBy": None,
    }  # fmt: skip
    return {**base, **parts}


def test_categories_name_only_what_the_documents_hold() -> None:
    titles = [c.title for c in categories([_document()])]
    assert titles == ["Account", "About this export"]
    (account,) = [c for c in categories([_document()]) if c.title == "Account"]
    assert "user name" in account.details and "e-mail" not in account.details
    lesson = {"subject": "Math", "score": None, "spec": {"image": "data:image/png;base64,AAAA"},
              "imagePaths": []}  # fmt: skip
    full = _document(
        profile={"gradeLevel": 3}, lessons=[lesson, {**lesson, "subject": "Art"}],
        achievements=[{"id": "a"}],
    )  # fmt: skip
    found = {c.title: c.details for c in categories([full])}
    assert list(found) == [
        "Account",
        "Learning profile",
        "Lessons",
        "Achievements",
        "About this export",
    ]
    assert found["Lessons"].startswith("2 lessons, in Art, Math")
    assert "pictures inside lesson content" in found["Lessons"]
    assert "scores" not in found["Lessons"]
    assert found["Achievements"].startswith("1 badges")


def test_what_the_operator_did_not_say_is_marked_not_configured() -> None:
    notice = build_notice([_document()], OperatorNotice())
    body = notice.as_json()
    assert body["controller"] == body["contact"] == NOT_CONFIGURED
    assert body["purposes"] == body["recipients"] == [NOT_CONFIGURED]
    assert body["retention"] == [
        f"On the platform: {NOT_CONFIGURED}.",
        f"Archived copies of exports: {NOT_CONFIGURED}.",
    ]
    assert body["leftOut"] == []


def test_the_operators_facts_and_the_archive_keep() -> None:
    operator = OperatorNotice(
        controller="Learning Co", contact="privacy@example.org", purposes=("teaching",),
        recipients=("hosting provider",), retention="as long as the account exists", archive_keep=7,
    )  # fmt: skip
    left = [Exclusion("users", "password", "a credential")]
    body = build_notice([_document()], operator, left_out=left).as_json()
    assert (body["controller"], body["contact"]) == ("Learning Co", "privacy@example.org")
    assert body["purposes"] == ["teaching"] and body["recipients"] == ["hosting provider"]
    assert "keeps the 7 newest snapshots" in body["retention"][1]
    assert body["leftOut"] == [{"where": "users.password", "reason": "a credential"}]
    assert operator.missing() == []
    assert OperatorNotice(contact="x").missing() == [
        "controller",
        "purposes",
        "recipients",
        "retention",
    ]
