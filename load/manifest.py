"""The records a run writes beside its documents: the plan, one part per finished chunk, and the
manifest. Declared pydantic models, so what is written is what is read back (and checked).

Nothing here holds learner content: ids, relative paths, sizes, hashes, counts and the
row/column names of values exported as null.

* `plan.json`, written once when a run starts, fixes what the run exports (the learner ids of
  every chunk, the export date, the options), so a resumed run finishes the same snapshot even if
  learners were added meanwhile or midnight passed.
* `parts/chunk-NNNNN.json`, written after every file of a chunk is complete, marks that chunk
  finished; a resumed run skips it.
* `manifest.json`, built from the plan and the parts, is written last.

These models are the one reader of the records as well as their writer: a record is read with
`model_validate_json`, lenient about keys it does not know (a newer writer may add some) and
strict about the ones it declares (types, ranges, paths that stay inside the snapshot).
"""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from load.errors import TerminalLoadError

FORMAT = "learner-export-snapshot/1"
MANIFEST_NAME = "manifest.json"
PLAN_NAME = "plan.json"
PARTS_DIR = "parts"
PARQUET_DIR = "parquet"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


def _inside_the_snapshot(relative: str) -> str:
    """A plain relative POSIX path that cannot leave the snapshot (no `..`, not absolute)."""
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts or "\\" in relative:
        raise ValueError("must be a relative path inside the snapshot")
    return relative


RelativePath = Annotated[str, AfterValidator(_inside_the_snapshot)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class RunParameters(_Record):
    """The options that decide a snapshot's content; a resumed run must repeat them exactly."""

    learners: Literal["all"] | list[int]
    chunk_size: int = Field(gt=0)
    compress: Literal["gzip", "zstd"] | None
    encrypt: bool
    exported_by: int | None
    parquet: bool
    html: bool = False  # issue 13: `archive --html`; absent from older manifests
    report: bool = False
    """`archive --report`: the analyst report is written into the snapshot (absent from runs
    made before it existed: False)."""


class RunPlan(_Record):
    """What a run exports, fixed when it starts. `chunks[i]` are the learner ids of chunk i,
    ascending; every requested id is in exactly one chunk."""

    format: str = FORMAT
    run_id: str
    started_at: str
    export_date: str
    parameters: RunParameters
    chunks: list[list[int]]


class NulledValue(_Record):
    """A stored value exported as null (`transform.values.Problem`): where it is, never what it
    was."""

    table: str
    column: str
    row_id: str
    kind: str


class FileEntry(_Record):
    """One learner's document as stored. `path` is relative to the snapshot directory; `bytes`
    and `sha256` describe the file as stored (after compression and encryption)."""

    path: RelativePath
    learner_id: int = Field(ge=1)
    bytes: int = Field(ge=0)
    sha256: Sha256
    lessons_exported: int = Field(ge=0)
    lessons_total: int = Field(ge=0)
    truncated: bool
    problems: list[NulledValue] = []
    page: StoredEntry | None = None
    """The readable page beside the document (`archive --html`), stored as the document is."""


class Failure(_Record):
    """A learner that could not be exported, and why (an error message that names no content)."""

    learner_id: int
    chunk: int
    error: str


class ParquetPartEntry(_Record):
    """One Parquet file a chunk wrote; `path` is relative to the snapshot directory."""

    table: str
    path: RelativePath
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: Sha256


class StoredEntry(_Record):
    """A file of the snapshot other than documents and Parquet parts (the data dictionary, the
    analyst report)."""

    path: RelativePath
    bytes: int = Field(ge=0)
    sha256: Sha256


class ChunkPart(_Record):
    """A finished chunk: every file listed here is complete. `not_found` are requested ids that
    are not LEARNER users; `failures` the learners that could not be exported. With Parquet,
    `parquet_skipped` names the analyst tables not written because the source lacks their
    optional table, and `pseudonym_key_fingerprint` identifies the key of the pseudonyms."""

    index: int
    learner_ids: list[int]
    files: list[FileEntry]
    parquet: list[ParquetPartEntry] = []
    parquet_skipped: list[str] = []
    pseudonym_key_fingerprint: str | None = None
    not_found: list[int] = []
    failures: list[Failure] = []
    seconds: float


class Counts(_Record):
    learners_requested: int
    learners_exported: int
    files: int
    bytes: int
    truncated: int
    not_found: int
    failed: int
    problems: int


class ParquetTable(_Record):
    rows: int
    parts: list[ParquetPartEntry]


class Manifest(_Record):
    """The snapshot's table of contents, written last. Files are ordered by learner id.

    With Parquet: `parquet_skipped` names the analyst tables that no chunk wrote because the
    source lacks their optional table (contract §1b); `pseudonym_key_fingerprint` identifies the
    pseudonym key (`transform.pseudonyms.key_fingerprint`); `dictionary` is the data dictionary
    `schema.json`. All three are absent from snapshots written before they existed. `report`
    is the analyst report `report.html`, written by `archive --report` after the manifest and
    before the publication (the manifest is then written again, listing it).
    """

    format: str = FORMAT
    run_id: str
    export_date: str
    started_at: str
    finished_at: str
    duration_seconds: float
    parameters: RunParameters
    counts: Counts
    files: list[FileEntry]
    parquet: dict[str, ParquetTable]
    not_found: list[int]
    failures: list[Failure]
    chunks: int
    parquet_skipped: list[str] = []
    pseudonym_key_fingerprint: str | None = None
    dictionary: StoredEntry | None = None
    report: StoredEntry | None = None

    def listed_paths(self) -> set[str]:
        """Every file of the snapshot, relative to it: the manifest itself included."""
        listed = {MANIFEST_NAME} | {entry.path for entry in self.files}
        listed |= {entry.page.path for entry in self.files if entry.page is not None}
        listed |= {part.path for table in self.parquet.values() for part in table.parts}
        listed |= {entry.path for entry in (self.dictionary, self.report) if entry is not None}
        return listed

    @model_validator(mode="after")
    def _one_file_per_learner(self) -> Manifest:
        seen: set[int] = set()
        for entry in self.files:
            if entry.learner_id in seen:
                raise ValueError(f"learner {entry.learner_id} is listed twice")
            seen.add(entry.learner_id)
        return self


def part_path(index: int) -> str:
    """The part record of chunk `index`, relative to the run directory."""
    return posixpath.join(PARTS_DIR, f"chunk-{index:05d}.json")


def parquet_part_path(table: str, index: int) -> str:
    """Chunk `index`'s Parquet file of `table`, relative to the run directory."""
    return posixpath.join(PARQUET_DIR, table, f"part-{index:05d}.parquet")


def chunked(ids: list[int], size: int) -> list[list[int]]:
    """`ids` ascending and without repeats, cut into consecutive chunks of at most `size`."""
    ordered = sorted(set(ids))
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def build_manifest(
    plan: RunPlan, parts: list[ChunkPart], *, finished_at: str, seconds: float
) -> Manifest:
    """The manifest of a run whose chunks are all finished (`parts` holds one per chunk)."""
    ordered = sorted(parts, key=lambda p: p.index)
    files = sorted((f for p in ordered for f in p.files), key=lambda f: f.learner_id)
    failures = sorted((f for p in ordered for f in p.failures), key=lambda f: f.learner_id)
    not_found = sorted(i for p in ordered for i in p.not_found)
    tables: dict[str, list[ParquetPartEntry]] = {}
    for part in ordered:
        for entry in part.parquet:
            tables.setdefault(entry.table, []).append(entry)
    fingerprints = {p.pseudonym_key_fingerprint for p in ordered if p.pseudonym_key_fingerprint}
    if len(fingerprints) > 1:
        raise TerminalLoadError(
            f"run {plan.run_id}: chunks were written with {len(fingerprints)} different pseudonym "
            "keys; their tables cannot be joined (start a new run with one key)"
        )
    return Manifest(
        run_id=plan.run_id,
        export_date=plan.export_date,
        started_at=plan.started_at,
        finished_at=finished_at,
        duration_seconds=round(seconds, 3),
        parameters=plan.parameters,
        counts=Counts(
            learners_requested=sum(len(c) for c in plan.chunks),
            learners_exported=len(files),
            files=len(files),
            bytes=sum(f.bytes for f in files),
            truncated=sum(f.truncated for f in files),
            not_found=len(not_found),
            failed=len(failures),
            problems=sum(len(f.problems) for f in files),
        ),
        files=files,
        parquet={
            table: ParquetTable(rows=sum(e.rows for e in entries), parts=entries)
            for table, entries in sorted(tables.items())
        },
        not_found=not_found,
        failures=failures,
        chunks=len(ordered),
        # A table skipped by one chunk is listed (its optional source table was missing then).
        parquet_skipped=sorted({name for p in ordered for name in p.parquet_skipped}),
        pseudonym_key_fingerprint=next(iter(fingerprints), None),
    )


def to_json(record: BaseModel) -> bytes:
    """A record as indented JSON text (it is read by people too)."""
    return record.model_dump_json(indent=2).encode() + b"\n"
