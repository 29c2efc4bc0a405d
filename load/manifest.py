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

import itertools
import posixpath
from collections.abc import Iterable, Iterator
from typing import Annotated, BinaryIO, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

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
    # Plain string checks, not PurePosixPath: that interns every part of every path it reads
    # into the process-wide table of interned strings (a manifest has millions of paths).
    if not relative or relative.startswith("/") or ".." in relative.split("/") or "\\" in relative:
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


class _ChunkOutcome(_Record):
    """What a finished chunk records besides its files (ChunkPart) or their counts (ChunkTally)."""

    parquet: list[ParquetPartEntry] = []
    parquet_skipped: list[str] = []
    pseudonym_key_fingerprint: str | None = None
    not_found: list[int] = []
    failures: list[Failure] = []
    seconds: float


class ChunkPart(_ChunkOutcome):
    """A finished chunk: every file listed here is complete. `not_found` are requested ids that
    are not LEARNER users; `failures` the learners that could not be exported. With Parquet,
    `parquet_skipped` names the analyst tables not written because the source lacks their
    optional table, and `pseudonym_key_fingerprint` identifies the key of the pseudonyms."""

    index: int
    learner_ids: list[int]
    files: list[FileEntry]

    def tally(self) -> ChunkTally:
        """What a run keeps of this chunk while the others run (its files counted, not held)."""
        return ChunkTally(
            index=self.index,
            files=len(self.files),
            bytes=sum(f.bytes for f in self.files),
            truncated=sum(f.truncated for f in self.files),
            problems=sum(len(f.problems) for f in self.files),
            **{name: getattr(self, name) for name in _ChunkOutcome.model_fields},
        )


class ChunkTally(_ChunkOutcome):
    """A finished chunk as a run holds it until its manifest is written: its part record with
    the file entries counted instead of listed. The entries stay in the part record on the
    destination, and the manifest is streamed from there (`manifest_pieces`), so what a run
    holds grows with its chunks, never with its learners."""

    index: int
    files: int = Field(ge=0)
    bytes: int = Field(ge=0)
    truncated: int = Field(ge=0)
    problems: int = Field(ge=0)


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


class ManifestHead(_Record):
    """A snapshot's manifest without its file entries: what a run holds in memory while it
    writes, audits and publishes the snapshot. The entries (one per learner, so millions) are
    streamed from the written manifest (`manifest_entries`) where they are needed.

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
    parquet: dict[str, ParquetTable]
    not_found: list[int]
    failures: list[Failure]
    chunks: int
    parquet_skipped: list[str] = []
    pseudonym_key_fingerprint: str | None = None
    dictionary: StoredEntry | None = None
    report: StoredEntry | None = None

    def listed_besides_files(self) -> set[str]:
        """The files of the snapshot its entries do not list: the manifest itself, the Parquet
        parts, the dictionary and the report (relative to the snapshot)."""
        listed = {MANIFEST_NAME} | {part.path for t in self.parquet.values() for part in t.parts}
        listed |= {entry.path for entry in (self.dictionary, self.report) if entry is not None}
        return listed


class Manifest(ManifestHead):
    """The snapshot's table of contents, written last, read whole (`verify`, `restore`, tests).
    Files are ordered by learner id, each learner once."""

    files: list[FileEntry]

    def head(self) -> ManifestHead:
        """This manifest without its entries."""
        return ManifestHead.model_validate(self.model_dump(exclude={"files"}, round_trip=True))

    def listed_paths(self) -> set[str]:
        """Every file of the snapshot, relative to it: the manifest itself included."""
        return self.listed_besides_files() | {p for e in self.files for p in entry_paths(e)}

    @model_validator(mode="after")
    def _one_file_per_learner(self) -> Manifest:
        seen: set[int] = set()
        for entry in self.files:
            if entry.learner_id in seen:
                raise ValueError(f"learner {entry.learner_id} is listed twice")
            seen.add(entry.learner_id)
        return self


def entry_paths(entry: FileEntry) -> tuple[str, ...]:
    """The files one entry lists: the document, and its page when there is one."""
    return (entry.path,) if entry.page is None else (entry.path, entry.page.path)


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


def build_head(
    plan: RunPlan, tallies: Iterable[ChunkTally], *, finished_at: str, seconds: float
) -> ManifestHead:
    """The manifest head of a run whose chunks are all finished (`tallies` holds one per
    chunk); its entries are the part records' files, in chunk order (`manifest_pieces`)."""
    ordered = sorted(tallies, key=lambda t: t.index)
    failures = sorted((f for t in ordered for f in t.failures), key=lambda f: f.learner_id)
    not_found = sorted(i for t in ordered for i in t.not_found)
    tables: dict[str, list[ParquetPartEntry]] = {}
    for tally in ordered:
        for entry in tally.parquet:
            tables.setdefault(entry.table, []).append(entry)
    fingerprints = {t.pseudonym_key_fingerprint for t in ordered if t.pseudonym_key_fingerprint}
    if len(fingerprints) > 1:
        raise TerminalLoadError(
            f"run {plan.run_id}: chunks were written with {len(fingerprints)} different pseudonym "
            "keys; their tables cannot be joined (start a new run with one key)"
        )
    files = sum(t.files for t in ordered)
    return ManifestHead(
        run_id=plan.run_id,
        export_date=plan.export_date,
        started_at=plan.started_at,
        finished_at=finished_at,
        duration_seconds=round(seconds, 3),
        parameters=plan.parameters,
        counts=Counts(
            learners_requested=sum(len(c) for c in plan.chunks),
            learners_exported=files,
            files=files,
            bytes=sum(t.bytes for t in ordered),
            truncated=sum(t.truncated for t in ordered),
            not_found=len(not_found),
            failed=len(failures),
            problems=sum(t.problems for t in ordered),
        ),
        parquet={
            table: ParquetTable(rows=sum(e.rows for e in entries), parts=entries)
            for table, entries in sorted(tables.items())
        },
        not_found=not_found,
        failures=failures,
        chunks=len(ordered),
        # A table skipped by one chunk is listed (its optional source table was missing then).
        parquet_skipped=sorted({name for t in ordered for name in t.parquet_skipped}),
        pseudonym_key_fingerprint=next(iter(fingerprints), None),
    )


def build_manifest(
    plan: RunPlan, parts: list[ChunkPart], *, finished_at: str, seconds: float
) -> Manifest:
    """The whole manifest of a run whose chunks are all finished (`parts` holds one per chunk),
    as `manifest_pieces` writes it and `Manifest` reads it back."""
    head = build_head(plan, [p.tally() for p in parts], finished_at=finished_at, seconds=seconds)
    files = sorted((f for p in parts for f in p.files), key=lambda f: f.learner_id)
    return Manifest(**dict(head), files=files)


_FILES_OPEN = b'  "files": ['
"""The line that opens the entries in a manifest: `manifest_pieces` writes each entry on a line
of its own after it, and the array's closing bracket on the line after the last."""


def manifest_pieces(head: ManifestHead, entries: Iterable[FileEntry]) -> Iterator[bytes]:
    """manifest.json of `head` and its `entries`, piece by piece, one entry held at a time: the
    head's fields as `to_json` writes them, then `files`, last, one entry per line (what
    `manifest_entries` streams back). The whole is the JSON of a `Manifest`.

    `entries` must come in ascending learner id order (chunks hold ascending, consecutive ids);
    a repeated or out-of-order learner raises TerminalLoadError, as `Manifest` refuses it.
    """
    text = to_json(head)
    yield text[: text.rindex(b"\n}")] + b",\n" + _FILES_OPEN
    previous, separator = 0, b"\n    "
    for entry in entries:
        if entry.learner_id <= previous:
            raise TerminalLoadError(
                f"run {head.run_id}: learner {entry.learner_id} comes after learner {previous} "
                "in the part records (listed twice, or chunks out of order)"
            )
        previous = entry.learner_id
        yield separator + entry.model_dump_json().encode()
        separator = b",\n    "
    yield b"\n  ]\n}\n"


_INVALID = f"{MANIFEST_NAME} is not a valid manifest"


class ManifestError(TerminalLoadError):
    """A manifest's text is not a manifest (an entry not valid, a learner twice, cut short):
    the snapshot cannot be trusted. Messages name the entry and the field, never a value."""


def manifest_head(handle: BinaryIO) -> ManifestHead:
    """The head of the manifest.json open in `handle` (binary, seekable), its entries left
    unread: the text before them when `manifest_pieces` wrote it (entries last, one per line),
    else the whole file parsed (an earlier version's manifest). Raises pydantic's
    ValidationError when it is not a manifest's head."""
    before = bytearray()
    for line in handle:
        if line.rstrip() == _FILES_OPEN:
            text = bytes(before).rstrip()
            if _one_per_line(handle.readline().strip()) and text.endswith(b","):
                # What follows the entries is checked when they are read (`manifest_entries`).
                return ManifestHead.model_validate_json(text[:-1] + b"\n}")
            break
        before += line
    handle.seek(0)
    return ManifestHead.model_validate_json(handle.read())


def manifest_entries(handle: BinaryIO) -> Iterator[FileEntry]:
    """The file entries of the manifest.json open in `handle` (binary, seekable), in order, one
    read at a time when it was written by `manifest_pieces`; a manifest written another way (by
    earlier versions, one field per line) is read whole. Raises TerminalLoadError when an entry
    is not valid or a learner comes twice or out of order (ManifestError)."""
    previous = 0
    for entry in _entries(handle):
        if entry.learner_id <= previous:
            raise ManifestError(
                f"{_INVALID} (learner {entry.learner_id} is listed twice or out of order)"
            )
        previous = entry.learner_id
        yield entry


def _entries(handle: BinaryIO) -> Iterator[FileEntry]:
    for line in handle:
        if line.rstrip() == _FILES_OPEN:
            break
    else:
        yield from _whole_files(handle)
        return
    first = handle.readline()
    if not _one_per_line(first.strip()):
        yield from _whole_files(handle)  # one field per line: not streamed
        return
    for number, line in enumerate(itertools.chain([first], handle)):
        text = line.strip()
        if text.startswith(b"]"):
            if text != b"]" or handle.read().strip() != b"}":
                raise ManifestError(f"{_INVALID} (text follows its list of files)")
            return
        try:
            entry = FileEntry.model_validate_json(text.removesuffix(b","))
        except ValidationError as exc:
            raise ManifestError(f"{_INVALID} (files.{number}.{_field(exc)})") from None
        yield entry
    raise ManifestError(f"{_INVALID} (its list of files is cut short)")


def _one_per_line(first: bytes) -> bool:
    """Whether the line after `_FILES_OPEN` (stripped) says `manifest_pieces` wrote the
    entries: one whole entry on it, or the list's end."""
    return first == b"]" or (first.startswith(b"{") and first.rstrip(b",") != b"{")


class _Files(_Record):
    files: list[FileEntry]


def _whole_files(handle: BinaryIO) -> Iterator[FileEntry]:
    """The entries of a manifest not written one per line: the whole file parsed at once."""
    handle.seek(0)
    try:
        files = _Files.model_validate_json(handle.read()).files
    except ValidationError as exc:
        raise ManifestError(f"{_INVALID} ({_field(exc)})") from None
    yield from files


def _field(exc: ValidationError) -> str:
    """Where and what the first validation error is, without the offending value."""
    error = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def to_json(record: BaseModel) -> bytes:
    """A record as indented JSON text (it is read by people too)."""
    return record.model_dump_json(indent=2).encode() + b"\n"
