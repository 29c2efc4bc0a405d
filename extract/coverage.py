"""Coverage: which of the source's learner-linked tables and columns the export carries.

The source's schema is reflected (SQLAlchemy's inspector, on SQLite and PostgreSQL alike) and each
learner-linked table is held against the registry (`coverage_registry.toml` beside this module),
which records for each of its columns where it is exported or why it is left out.

A table is learner-linked when it is `users` itself, has a foreign key to `users.id`, or has a
column whose name says it holds a learner's id (`LEARNER_ID_NAMES`). Every column of such a table
needs a decision: a column the registry does not name is `unknown`, and so is a whole linked table
it does not name. Tables with no link to a learner are not listed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

REGISTRY_PATH = Path(__file__).with_name("coverage_registry.toml")
USERS = "users"

LEARNER_ID_NAMES = frozenset({"learnerid", "userid", "childid", "studentid", "kidid", "pupilid"})
"""Column names (lower case, underscores removed) that hold a learner's id without a foreign
key saying so: real schemas often leave the constraint out (the platform's `achievements`)."""

DOCUMENT = "document"
"""How a registry place in the JSON document begins (the others are analyst tables)."""
ANALYST_ONLY = (
    "kept only in the operator's analyst tables (Parquet, with the learner as a pseudonym), "
    "not in this export's documents"
)

Verdict = Literal["exported", "excluded", "unknown"]


class RegistryError(Exception):
    """The registry file is not what this module expects; the message says where."""


@dataclass(frozen=True, slots=True)
class TableDecision:
    """The registry's entry of one table: per-column places or reasons, or one reason for all."""

    exported: Mapping[str, str]
    excluded: Mapping[str, str]
    whole_table_excluded: str | None = None


@dataclass(frozen=True, slots=True)
class Registry:
    tables: Mapping[str, TableDecision]

    def left_out_of_document(self) -> list[tuple[str, str | None, str]]:
        """What the JSON document does not carry, as (table, column or None for the whole
        table, why), in table order: every exclusion, and what only the analyst tables hold."""
        found: list[tuple[str, str | None, str]] = []
        for name, decision in sorted(self.tables.items()):
            if decision.whole_table_excluded is not None:
                found.append((name, None, decision.whole_table_excluded))
                continue
            elsewhere = {
                column: where
                for column, where in decision.exported.items()
                if not where.startswith(DOCUMENT)
            }
            if elsewhere and len(elsewhere) == len(decision.exported):
                found.append((name, None, ANALYST_ONLY))
            else:
                found.extend((name, column, ANALYST_ONLY) for column in sorted(elsewhere))
            found.extend((name, column, why) for column, why in sorted(decision.excluded.items()))
        return found


@dataclass(frozen=True, slots=True)
class ColumnCoverage:
    """One column of a learner-linked table: its verdict and where it goes or why not."""

    table: str
    column: str
    link: str
    """Why the table is learner-linked (the first reason found)."""
    verdict: Verdict
    detail: str


def load_registry(path: Path = REGISTRY_PATH) -> Registry:
    """The registry file at `path`, checked for shape. Raises RegistryError."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"cannot read the coverage registry {path}: {exc}") from None
    tables = raw.get("tables")
    if not isinstance(tables, dict):
        raise RegistryError(f"{path}: no [tables.NAME] entries")
    return Registry({name: _decision(path, name, entry) for name, entry in tables.items()})


def _decision(path: Path, name: str, entry: Any) -> TableDecision:
    if not isinstance(entry, dict) or set(entry) - {"exported", "excluded"}:
        raise RegistryError(f"{path}: [tables.{name}] may hold only `exported` and `excluded`")
    exported = entry.get("exported", {})
    excluded = entry.get("excluded", {})
    if isinstance(excluded, str):
        if exported:
            raise RegistryError(f"{path}: [tables.{name}] excludes the table and exports columns")
        return TableDecision({}, {}, excluded)
    for part, value in (("exported", exported), ("excluded", excluded)):
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            raise RegistryError(f"{path}: [tables.{name}.{part}] must map columns to text")
    both = set(exported) & set(excluded)
    if both:
        raise RegistryError(f"{path}: [tables.{name}] both exports and excludes {sorted(both)}")
    return TableDecision(exported, excluded)


def learner_link(
    table: str, columns: Iterable[str], foreign_keys: Iterable[Mapping[str, Any]]
) -> str | None:
    """Why `table` is linked to a learner, or None when it is not."""
    if table == USERS:
        return "the users table itself"
    for key in foreign_keys:
        if key.get("referred_table") == USERS and "id" in (key.get("referred_columns") or ()):
            return f"foreign key {', '.join(key.get('constrained_columns') or ())} -> users.id"
    for column in columns:
        if column.lower().replace("_", "") in LEARNER_ID_NAMES:
            return f"learner id column {column} (by name)"
    return None


def source_coverage(conn: Connection, registry: Registry) -> list[ColumnCoverage]:
    """Every column of every learner-linked table of the source, in table then column order."""
    inspector = sa.inspect(conn)
    found: list[ColumnCoverage] = []
    for table in sorted(inspector.get_table_names()):
        columns = [str(c["name"]) for c in inspector.get_columns(table)]
        link = learner_link(table, columns, inspector.get_foreign_keys(table))
        if link is not None:
            found.extend(table_coverage(table, columns, link, registry.tables.get(table)))
    return found


def table_coverage(
    table: str, columns: Iterable[str], link: str, decision: TableDecision | None
) -> list[ColumnCoverage]:
    """The verdict on each of a linked table's columns under its registry entry (None: none)."""
    result = []
    for column in columns:
        verdict: Verdict
        if decision is None:
            verdict, detail = "unknown", f"table {table} has no entry in the coverage registry"
        elif decision.whole_table_excluded is not None:
            verdict, detail = "excluded", decision.whole_table_excluded
        elif column in decision.exported:
            verdict, detail = "exported", decision.exported[column]
        elif column in decision.excluded:
            verdict, detail = "excluded", decision.excluded[column]
        else:
            verdict, detail = "unknown", "no decision in the coverage registry"
        result.append(ColumnCoverage(table, column, link, verdict, detail))
    return result
