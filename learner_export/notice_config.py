"""The operator's part of the Art. 15 notice: a TOML or JSON file named by the setting
`LEARNER_EXPORT_NOTICE_CONFIG` (README, "The Art. 15 notice").

Recognised keys, all optional: `controller`, `contact`, `retention` (text), `purposes`,
`recipients` (lists of text) and `archive_keep` (the `--keep` of the scheduled archive). What the
file leaves out is shown as "not configured by the operator", never made up; `serve` warns about
it at start. A file that is named but unreadable, or holds anything else, is an error.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from extract.coverage import load_registry
from learner_export.arguments import UserError
from learner_export.settings import Settings
from transform.notice import Exclusion, Notice, OperatorNotice, build_notice

_TEXT_KEYS = ("controller", "contact", "retention")
_LIST_KEYS = ("purposes", "recipients")


def load_operator_notice(path: Path | None) -> OperatorNotice:
    """The operator's notice settings from `path` (TOML, or JSON when it ends in `.json`); an
    empty one when `path` is None. Raises UserError naming the file and the key at fault."""
    if path is None:
        return OperatorNotice()
    try:
        text = path.read_text(encoding="utf-8")
        raw: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"cannot read the notice configuration {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"the notice configuration {path} must hold a table of keys")
    unknown = set(raw) - {*_TEXT_KEYS, *_LIST_KEYS, "archive_keep"}
    if unknown:
        raise UserError(f"the notice configuration {path} has unknown keys: {sorted(unknown)}")
    for key in _TEXT_KEYS:
        if key in raw and not isinstance(raw[key], str):
            raise UserError(f"the notice configuration {path}: `{key}` must be text")
    for key in _LIST_KEYS:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"the notice configuration {path}: `{key}` must be a list of text")
    keep = raw.get("archive_keep")
    if keep is not None and (type(keep) is not int or keep < 1):
        raise UserError(
            f"the notice configuration {path}: `archive_keep` must be a whole number >= 1"
        )
    return OperatorNotice(
        controller=(raw.get("controller") or "").strip() or None,
        contact=(raw.get("contact") or "").strip() or None,
        purposes=tuple(v.strip() for v in raw.get("purposes", []) if v.strip()),
        recipients=tuple(v.strip() for v in raw.get("recipients", []) if v.strip()),
        retention=(raw.get("retention") or "").strip() or None,
        archive_keep=keep,
    )


def left_out() -> list[Exclusion]:
    """What the JSON documents do not carry, and why: the coverage registry's decisions."""
    return [
        Exclusion(table, column, why)
        for table, column, why in load_registry().left_out_of_document()
    ]


def notice_for(documents: Sequence[Mapping[str, Any]], operator: OperatorNotice) -> Notice:
    """The notice of these plain documents (`transform.page_html.plain_document`)."""
    return build_notice(documents, operator, left_out=left_out())


def operator_notice(settings: Settings) -> OperatorNotice:
    """The configured operator notice (`settings.notice_config`); raises UserError."""
    return load_operator_notice(settings.notice_config)


def incomplete_warning(operator: OperatorNotice, settings: Settings) -> str | None:
    """What `serve` warns at start when the notice will show something as not configured."""
    if settings.notice_config is None:
        return (
            "no notice configuration (LEARNER_EXPORT_NOTICE_CONFIG): the Art. 15 notice of every "
            "page and family bundle shows controller, contact, purposes, recipients and "
            "retention as 'not configured by the operator'"
        )
    missing = operator.missing()
    if missing:
        return (
            f"the notice configuration {settings.notice_config} does not say "
            f"{', '.join(missing)}: the Art. 15 notice shows them as 'not configured by the "
            "operator'"
        )
    return None
