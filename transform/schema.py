"""The JSON Schema (2020-12) of the document, shipped in the package beside this module."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson
from jsonschema import Draft202012Validator

SCHEMA_FILE = "learner-document.schema.json"


@functools.cache
def document_schema() -> dict[str, Any]:
    """The schema as a dict (read once from the package)."""
    schema: dict[str, Any] = orjson.loads(
        resources.files("transform").joinpath(SCHEMA_FILE).read_bytes()
    )
    return schema


@functools.cache
def document_validator() -> Draft202012Validator:
    """A validator for decoded documents; `iter_errors` lists every violation."""
    Draft202012Validator.check_schema(document_schema())
    return Draft202012Validator(
        document_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


# Keywords whose jsonschema message quotes only key names; every other message may quote a value,
# which may be personal, so only the keyword is reported.
_KEY_NAME_KEYWORDS = frozenset({"required", "additionalProperties"})


def schema_errors(document: Any) -> list[str]:
    """Every way `document` (decoded JSON) breaks the schema, one 'path: problem' line each; [] if
    valid. Lines name JSON pointers and schema keywords, never the offending values."""
    lines = []
    for error in document_validator().iter_errors(document):
        pointer = "/" + "/".join(str(part) for part in error.absolute_path)
        detail = (
            error.message if error.validator in _KEY_NAME_KEYWORDS else f"fails {error.validator!r}"
        )
        lines.append(f"{pointer}: {detail}")
    return lines
