from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows import run
from flows.errors import RunFailed, RunMismatch
from load.destination import MANIFEST_NAME, Destination, open_destination, write_file
from load.errors import TerminalLoadError
from load.manifest import (
    ChunkPart,
    ChunkTally,
    Failure,
    FileEntry,
    ManifestHead,
    RunParameters,
    manifest_pieces,
    part_path,
    to_json,
)

NOW = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
PARAMETERS = RunParameters(
    learners="all", chunk_size=2, compress=None, encrypt=False, exported_by=None, parquet=False
)


def _destination(tmp_path: Path) -> Destination:
    return open_destination(str(tmp_path / "dest"))


def _part(index: int, ids: list[int], failed: list[int] = ()) -> ChunkPart:  # type: ignore[assignment]
    return ChunkPart(
        index=index,
        learner_ids=ids,
        files=[
            FileEntry(
                path=f"doc-{i}.json",
                learner_id=i,
                bytes=2,
                sha256="0" * 64,
                lessons_exported=0,
                lessons_total=0,
                truncated=False,
            )
            for i in ids
            if i not in failed
        ],
        failures=[Failure(learner_id=i, chunk=index, error="boom") for i in failed],
        seconds=0,
    )


def _recorded(destination: Destination, *parts: ChunkPart) -> dict[int, ChunkTally]:
    """The tallies of `parts`, their part records written as a finished chunk writes them (the
    manifest is streamed from the records)."""
    run_dir = destination.incomplete_dir("r")
    for part in parts:
        write_file(destination.fs, f"{run_dir}/{part_path(part.index)}", to_json(part))
    return {part.index: part.tally() for part in parts}


def test_a_plan_is_made_once_and_kept(tmp_path: Path) -> None:
    destination = _destination(tmp_path)
    plan = run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [5, 3, 4])
    assert plan.chunks == [[3, 4], [5]]
    assert plan.export_date == "2024-01-15T12:00:00.000Z"
    later = run.open_plan(
        destination, "r", PARAMETERS, now=NOW + timedelta(days=1), learner_ids=lambda: [3, 4, 5, 6]
    )
    assert later == plan  # learners added meanwhile and the new date do not change the run


def test_resuming_with_other_options_is_refused(tmp_path: Path) -> None:
    destination = _destination(tmp_path)
    run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [3])
    changed = PARAMETERS.model_copy(update={"compress": "gzip"})
    with pytest.raises(RunMismatch, match="compress"):
        run.open_plan(destination, "r", changed, now=NOW, learner_ids=lambda: [3])


@pytest.mark.parametrize("state", ["started", "written", "published"])
def test_a_run_id_names_one_set_of_options_and_learners(tmp_path: Path, state: str) -> None:
    """Asking for an existing run id with other options or other learners is refused, naming
    what differs and what to do, whether the run is finished or not."""
    destination = _destination(tmp_path)
    plan = run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [1, 2])
    for i in (1, 2):
        Path(destination.incomplete_dir("r"), f"doc-{i}.json").write_text("{}")
    if state != "started":
        manifest = run.write_manifest(
            destination, plan, _recorded(destination, _part(0, [1, 2])), chunk_errors={}, tolerate_failures=False,
            now=NOW, seconds=0,
        )  # fmt: skip
        if state == "published":
            run.publish_run(destination, manifest)
    assert run.existing_run(destination, "r") == (state, PARAMETERS)
    assert run.existing_run(destination, "other") is None
    finished = state != "started"
    run.check_identity(destination, "r", PARAMETERS, PARAMETERS, finished=finished)  # the same
    some = PARAMETERS.model_copy(update={"learners": [1], "encrypt": True})
    with pytest.raises(RunMismatch) as refused:
        run.check_identity(destination, "r", PARAMETERS, some, finished=finished)
    message = str(refused.value)
    assert "(learners, encrypt differ)" in message and "nothing was written" in message
    assert ("abandon r --dest" in message) is (not finished)
    assert ("--run-id r-2" in message) is finished


def test_abandon_removes_an_unfinished_run_and_only_that(tmp_path: Path) -> None:
    destination = _destination(tmp_path)
    run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [1, 2])
    run_dir = Path(destination.incomplete_dir("r"))
    (run_dir / "doc-1.json").write_text("{}")
    write_file(destination.fs, f"{run_dir}/{part_path(0)}", to_json(_part(0, [1])))
    assert run.abandon_run(destination, "r") == (3, "2024-01-15T12:00:00.000Z")
    assert not run_dir.exists()
    with pytest.raises(RunMismatch, match="no unfinished run r"):
        run.abandon_run(destination, "r")


def test_abandon_never_touches_a_published_snapshot(tmp_path: Path) -> None:
    destination = _destination(tmp_path)
    plan = run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [1])
    Path(destination.incomplete_dir("r"), "doc-1.json").write_text("{}")
    manifest = run.write_manifest(
        destination, plan, _recorded(destination, _part(0, [1])), chunk_errors={}, tolerate_failures=False,
        now=NOW, seconds=0,
    )  # fmt: skip
    run.publish_run(destination, manifest)
    with pytest.raises(RunMismatch, match="finished and published"):
        run.abandon_run(destination, "r")
    assert run.published_manifest(destination, "r") == manifest


def test_finished_chunks_are_skipped_and_failed_ones_redone(tmp_path: Path) -> None:
    destination = _destination(tmp_path)
    plan = run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [1, 2, 3, 4, 5])
    run_dir = destination.incomplete_dir("r")
    for i in (1, 2, 3):
        Path(run_dir, f"doc-{i}.json").write_text("{}")
    write_file(destination.fs, f"{run_dir}/{part_path(0)}", to_json(_part(0, [1, 2])))
    write_file(destination.fs, f"{run_dir}/{part_path(1)}", to_json(_part(1, [3, 4], [4])))
    parts = run.finished_parts(destination, plan)
    assert sorted(parts) == [0, 1]
    assert run.pending_chunks(plan, parts) == [1, 2]


def test_write_manifest_then_publish_removes_leftovers(tmp_path: Path) -> None:
    destination = _destination(tmp_path)
    plan = run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [1, 2])
    run_dir = Path(destination.incomplete_dir("r"))
    for name in ("doc-1.json", "doc-2.json", ".doc-2.json.1a2b.tmp"):
        (run_dir / name).write_text("{}")
    manifest = run.write_manifest(
        destination,
        plan,
        _recorded(destination, _part(0, [1, 2])),
        chunk_errors={},
        tolerate_failures=False,
        now=NOW,
        seconds=1.0,
    )
    assert run.pending_manifest(destination, "r") == manifest  # state 2: written, not published
    assert run.published_manifest(destination, "r") is None
    run.publish_run(destination, manifest)
    snapshot = tmp_path / "dest" / "r"
    assert sorted(p.name for p in snapshot.rglob("*")) == [
        "doc-1.json",
        "doc-2.json",
        MANIFEST_NAME,
    ]
    assert not (tmp_path / "dest" / ".incomplete").exists()
    assert run.published_manifest(destination, "r") == manifest


def test_failures_stop_publication_unless_tolerated(tmp_path: Path) -> None:
    destination = _destination(tmp_path)
    plan = run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [1, 2, 3])
    parts = _recorded(destination, _part(0, [1, 2], failed=[2]))
    with pytest.raises(RunFailed, match=r"2 learner\(s\).*ids 2, 3"):
        run.write_manifest(
            destination,
            plan,
            parts,
            chunk_errors={1: "x"},
            tolerate_failures=False,
            now=NOW,
            seconds=0,
        )
    assert run.pending_manifest(destination, "r") is None
    manifest = run.write_manifest(
        destination, plan, parts, chunk_errors={1: "x"}, tolerate_failures=True, now=NOW, seconds=0
    )
    assert [f.learner_id for f in manifest.failures] == [2, 3]
    assert manifest.counts.files == 1


def test_retention_keeps_the_newest_and_records_deletions(tmp_path: Path) -> None:
    destination = _destination(tmp_path)
    for day, run_id in enumerate(["b-oldest", "a-middle", "c-newest"]):
        finished = (NOW + timedelta(days=day)).isoformat()
        write_file(
            destination.fs,
            f"{destination.snapshot_dir(run_id)}/{MANIFEST_NAME}",
            f'{{"run_id": "{run_id}", "finished_at": "{finished}"}}'.encode(),
        )
    deleted = run.apply_retention(destination, 2, current="c-newest", now=NOW)
    assert deleted == ["b-oldest"]
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == [
        ".deleted",
        "a-middle",
        "c-newest",
    ]
    assert (tmp_path / "dest" / ".deleted" / "b-oldest.json").is_file()
    assert run.apply_retention(destination, 1, current="a-middle", now=NOW) == []


def test_a_run_whose_files_are_gone_is_never_published(tmp_path: Path) -> None:
    """Files removed while the run was writing (the destination deleted under it): the written
    manifest is not published, its chunk is no longer finished, and the rerun writes them."""
    destination = _destination(tmp_path)
    plan = run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [1, 2])
    run_dir = Path(destination.incomplete_dir("r"))
    (run_dir / "doc-1.json").write_text("{}")
    write_file(destination.fs, f"{run_dir}/{part_path(0)}", to_json(_part(0, [1, 2])))
    assert run.finished_parts(destination, plan) == {}  # doc-2.json is missing
    manifest = run.write_manifest(
        destination, plan, _recorded(destination, _part(0, [1, 2])), chunk_errors={}, tolerate_failures=False,
        now=NOW, seconds=0,
    )  # fmt: skip
    assert run.incomplete_manifest(destination, manifest) == ["doc-2.json"]
    with pytest.raises(TerminalLoadError, match=r"1 file\(s\) its manifest lists are gone"):
        run.publish_run(destination, manifest)
    assert run.published_manifest(destination, "r") is None


def test_writing_the_manifest_holds_one_part_record_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest is streamed from the part records: while the manifest of 20,000 learners
    is written, at most one chunk's entries (200) are alive at a time (counted among the live
    objects as its pieces are written, beyond those alive before), where holding them would
    keep all 20,000."""
    destination = open_destination(str(tmp_path / "dest"))
    parameters = PARAMETERS.model_copy(update={"chunk_size": 200})
    ids = list(range(1, 20_001))
    plan = run.open_plan(destination, "r", parameters, now=NOW, learner_ids=lambda: ids)
    tallies = _recorded(destination, *(_part(i, c) for i, c in enumerate(plan.chunks)))
    alive: list[int] = []
    gc.collect()
    before = _live_entries()

    def counted(head: ManifestHead, entries: Iterable[FileEntry]) -> Iterator[bytes]:
        for number, piece in enumerate(manifest_pieces(head, entries)):
            if number % 1_000 == 500:
                alive.append(_live_entries() - before)
            yield piece

    monkeypatch.setattr(run, "manifest_pieces", counted)
    head = run.write_manifest(
        destination, plan, tallies, chunk_errors={}, tolerate_failures=False, now=NOW, seconds=0
    )
    assert head.counts.files == 20_000 and len(alive) == 20
    assert max(alive) <= 200, alive
    written = run.written_entries(destination, "r", published=False)
    assert [entry.learner_id for entry in written] == ids


def _live_entries() -> int:
    return sum(isinstance(o, FileEntry) for o in gc.get_objects())


def test_a_part_record_gone_before_the_manifest_is_written_redoes_its_chunk(
    tmp_path: Path,
) -> None:
    """The manifest is written from the part records: one removed after its chunk finished
    (the destination pruned under the run) stops the manifest, saying to rerun, and the rerun
    finds the chunk unfinished."""
    destination = _destination(tmp_path)
    plan = run.open_plan(destination, "r", PARAMETERS, now=NOW, learner_ids=lambda: [1, 2])
    for i in (1, 2):
        Path(destination.incomplete_dir("r"), f"doc-{i}.json").write_text("{}")
    tallies = _recorded(destination, _part(0, [1, 2]))
    Path(destination.incomplete_dir("r"), part_path(0)).unlink()
    with pytest.raises(TerminalLoadError, match=r"part record of chunk 0 is gone.*run the same"):
        run.write_manifest(
            destination, plan, tallies, chunk_errors={}, tolerate_failures=False, now=NOW,
            seconds=0,
        )  # fmt: skip
    assert run.pending_manifest(destination, "r") is None
    assert run.pending_chunks(plan, run.finished_parts(destination, plan)) == [0]
