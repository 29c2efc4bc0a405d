"""What a run reports: its result (returned by the flow) and the Markdown of its Prefect
artifact. Counts and ids only: no names, no lesson content, no paths beyond the snapshot's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from load.manifest import Counts, ManifestHead

SHOWN_IDS = 50
"""Ids listed in the artifact per category; the manifest always lists them all."""


class ArchiveResult(BaseModel):
    """The outcome of `archive_learners`. `status` is "complete" for a run that published its
    snapshot now, "already-complete" when the snapshot existed and nothing was written."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    status: Literal["complete", "already-complete"]
    snapshot: str
    counts: Counts
    parquet_rows: dict[str, int]
    truncated_learners: list[int]
    failed_learners: list[int]
    not_found: list[int]
    deleted_snapshots: list[str]
    chunks_run: int
    duration_seconds: float
    report: str | None = None
    """Where the snapshot's analyst report is (`archive --report`), or None."""
    read: str | None = None
    """How the chunks run now read the source (`flows.passes.read_way`); None when none ran."""

    @classmethod
    def from_manifest(
        cls,
        manifest: ManifestHead,
        *,
        truncated: list[int],
        status: Literal["complete", "already-complete"],
        snapshot: str,
        deleted: list[str],
        chunks_run: int,
        seconds: float,
        read: str | None = None,
    ) -> ArchiveResult:
        """The summary of the run `manifest` heads; `truncated` are its truncated learners' ids
        (`flows.archive_steps.RunOutcome.truncated`)."""
        return cls(
            run_id=manifest.run_id,
            status=status,
            snapshot=snapshot,
            counts=manifest.counts,
            parquet_rows={name: table.rows for name, table in manifest.parquet.items()},
            truncated_learners=truncated,
            failed_learners=[f.learner_id for f in manifest.failures],
            not_found=manifest.not_found,
            deleted_snapshots=deleted,
            chunks_run=chunks_run,
            duration_seconds=round(seconds, 3),
            report=None if manifest.report is None else f"{snapshot}/{manifest.report.path}",
            read=read,
        )


def summary_markdown(result: ArchiveResult) -> str:
    """The run's artifact: a table of counts, then the ids worth a look."""
    counts = result.counts
    rows = [
        ("snapshot", f"`{result.run_id}` ({result.status})"),
        ("learners requested", counts.learners_requested),
        ("files", counts.files),
        ("bytes", f"{counts.bytes:,}"),
        ("truncated learners (over 1,000 lessons)", counts.truncated),
        ("failed learners", counts.failed),
        ("requested ids that are not learners", counts.not_found),
        ("values exported as null (malformed)", counts.problems),
        ("chunks run now", result.chunks_run),
        ("source read", result.read or "not read (no chunk to run)"),
        ("duration", f"{result.duration_seconds:.1f} s"),
    ]
    rows += [(f"parquet `{name}` rows", n) for name, n in sorted(result.parquet_rows.items())]
    rows += [("deleted snapshots (retention)", ", ".join(result.deleted_snapshots) or "none")]
    lines = ["# Learner archive", "", "| | |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in rows]
    for title, ids in (
        ("Truncated learners", result.truncated_learners),
        ("Failed learners", result.failed_learners),
        ("Not learners", result.not_found),
    ):
        if ids:
            more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
            shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
            lines += ["", f"**{title}** (ids): {shown}{more}"]
    return "\n".join(lines) + "\n"
