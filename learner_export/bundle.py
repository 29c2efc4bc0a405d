"""The readable outputs of an export: one learner's page, and a family's bundle.

Both start from documents built by the one builder (`transform.document.build_document`) and
encoded by the one encoder: a page is rendered from what the JSON says, and a bundle's JSON
members are the very bytes a single export of the same learner gives (apart from `exportDate`).
Used by the CLI and by serve.py alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from learner_export.notice_config import left_out, notice_for
from load.names import document_filename, page_filename
from transform.document import BuiltDocument, Document
from transform.encoding import encode_document
from transform.notice import OperatorNotice
from transform.page_html import page_for, plain_document

NOTICE_NAME = "notice.json"
MANIFEST_NAME = "manifest.json"
BUNDLE_FORMAT = "learner-export-family-bundle/1"


def page_bytes(document: Document, operator: OperatorNotice) -> bytes:
    """The readable page (UTF-8 HTML) of one built document, with its own notice (which lists
    what the documents leave out, from the coverage registry)."""
    return page_for(document, operator, left_out())


@dataclass(frozen=True, slots=True)
class Member:
    """One file of a bundle: its name, bytes, sha256 (hex), and whose it is (None: the family's)."""

    name: str
    data: bytes
    learner_id: int | None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class Bundle:
    """A family's members in archive order: per child its document then its page (ascending
    ids), then `notice.json`, then `manifest.json` (the sha256 and size of every other member)."""

    parent_id: int
    members: tuple[Member, ...]

    def documents(self) -> list[Member]:
        """The children's JSON documents, in child id order."""
        return [m for m in self.members if m.name.endswith(".json") and m.learner_id is not None]


def family_bundle(
    parent_id: int,
    children: Sequence[BuiltDocument],
    operator: OperatorNotice,
    *,
    export_date: datetime,
) -> Bundle:
    """The bundle of `children` (built documents, one per child, ascending ids)."""
    members: list[Member] = []
    plains = []
    exclusions = left_out()
    for built in children:
        data = encode_document(built.document)
        plain = plain_document(built.document)
        plains.append(plain)
        page = page_for(built.document, operator, exclusions)
        members.append(
            Member(document_filename(built.learner_id, export_date), data, built.learner_id)
        )
        members.append(Member(page_filename(built.learner_id, export_date), page, built.learner_id))
    notice = notice_for(plains, operator).as_json()
    members.append(Member(NOTICE_NAME, orjson.dumps(notice, option=orjson.OPT_INDENT_2), None))
    manifest = {
        "format": BUNDLE_FORMAT,
        "parentId": parent_id,
        "exportDate": plains[0]["exportDate"] if plains else None,
        "children": [built.learner_id for built in children],
        "members": [
            {"name": m.name, "learnerId": m.learner_id, "bytes": len(m.data), "sha256": m.sha256}
            for m in members
        ],
        "lessons": {
            str(built.learner_id): {
                "exported": built.lessons_exported,
                "total": built.lessons_total,
                "truncated": built.truncated,
            }
            for built in children
        },
    }
    members.append(Member(MANIFEST_NAME, orjson.dumps(manifest, option=orjson.OPT_INDENT_2), None))
    return Bundle(parent_id, tuple(members))
