"""Round trips and refusals of `flows.restore_steps`: export -> restore into an empty database -> export
again gives the same bytes, for every demo learner, between every pair of backends."""

from __future__ import annotations

from pathlib import Path

import fsspec
import orjson
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from extract.tables import users
from flows.restore_steps import RestoreOutcome, RestoreReport, Status, restore_paths
from learner_export.demo import BIG_LEARNER_LESSONS
from load.restore_target import MissingParent, OnConflict
from tests.conftest import NewTarget, make_sqlite_demo
from tests.restore_helpers import (
    edited,
    export_all,
    learner_row_counts,
    make_snapshot,
    user_ids,
    write_documents,
)
from transform.document import LESSON_CAP

DIRECTIONS = [
    ("sqlite", "sqlite"),
    pytest.param("postgresql", "postgresql", marks=pytest.mark.postgres),
    pytest.param("sqlite", "postgresql", marks=pytest.mark.postgres),
    pytest.param("postgresql", "sqlite", marks=pytest.mark.postgres),
]


def restore(
    url: str,
    paths: list[Path] | list[str],
    *,
    key: bytes | None = None,
    on_conflict: OnConflict = OnConflict.FAIL,
    missing_parent: MissingParent = MissingParent.CREATE,
) -> RestoreReport:
    fernet = Fernet(key) if key is not None else None
    return restore_paths(
        url, paths, fernet=fernet, on_conflict=on_conflict, missing_parent=missing_parent
    )


def by_learner(report: RestoreReport) -> dict[int | None, RestoreOutcome]:
    return {outcome.learner_id: outcome for outcome in report.outcomes}


@pytest.mark.parametrize(("source_kind", "target_kind"), DIRECTIONS)
def test_round_trip_gives_identical_documents_for_every_demo_learner(
    request: pytest.FixtureRequest,
    new_target: NewTarget,
    tmp_path: Path,
    source_kind: str,
    target_kind: str,
) -> None:
    exports: dict[int, bytes] = request.getfixturevalue(f"{source_kind}_exports")
    target = new_target(target_kind)

    report = restore(target, write_documents(tmp_path / "exports", exports))

    assert report.summary() == f"{len(exports)} restored, 0 skipped, 0 refused"
    again = export_all(target)
    assert sorted(again) == sorted(exports)
    for learner_id, document in exports.items():
        assert again[learner_id] == document, f"learner {learner_id} differs after the round trip"


def test_a_truncated_learner_restores_its_document_and_is_reported(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    big = 4  # the demo's second learner has BIG_LEARNER_LESSONS lessons
    report = restore(target_url, write_documents(tmp_path, {big: sqlite_exports[big]}))

    outcome = by_learner(report)[big]
    assert outcome.status is Status.RESTORED
    assert outcome.lessons == LESSON_CAP
    assert learner_row_counts(target_url, big)["lessons"] == LESSON_CAP
    assert any("truncated" in note for note in outcome.notes)


def test_a_snapshot_manifest_states_the_lesson_total(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    big = 4
    snapshot = make_snapshot(
        tmp_path / "snap",
        {big: sqlite_exports[big], 3: sqlite_exports[3]},
        extra={big: {"lessons_total": BIG_LEARNER_LESSONS, "truncated": True}},
    )
    outcomes = by_learner(restore(target_url, [snapshot]))

    truncation = [note for note in outcomes[big].notes if "truncated" in note]
    assert truncation == [
        f"learner {big} was truncated at export: the document holds the {LESSON_CAP} most "
        f"recent of its {BIG_LEARNER_LESSONS} lessons, and only those are restored"
    ]
    assert not any("truncated" in note for note in outcomes[3].notes)


@pytest.mark.parametrize("suffix", [".gz", ".zst", ".enc", ".gz.enc", ".zst.enc"])
def test_compressed_and_encrypted_snapshots_round_trip(
    sqlite_exports: dict[int, bytes],
    new_target: NewTarget,
    fernet_key: bytes,
    tmp_path: Path,
    suffix: str,
) -> None:
    documents = {i: sqlite_exports[i] for i in (3, 6, 7)}
    target = new_target("sqlite")
    snapshot = make_snapshot(tmp_path / "snap", documents, suffix=suffix, key=fernet_key)

    report = restore(target, [snapshot], key=fernet_key)

    assert report.summary() == "3 restored, 0 skipped, 0 refused"
    again = export_all(target)
    assert {i: again[i] for i in documents} == documents


def test_a_checksum_mismatch_is_refused_before_anything_is_written(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    snapshot = make_snapshot(tmp_path / "snap", {i: sqlite_exports[i] for i in (3, 6, 7)})
    damaged = snapshot / "learner-data-6-2024-01-15.json"
    data = bytearray(damaged.read_bytes())
    data[100] ^= 0x01  # same size, one bit flipped
    damaged.write_bytes(bytes(data))

    outcomes = by_learner(restore(target_url, [snapshot]))

    assert outcomes[6].status is Status.REFUSED
    assert outcomes[6].reason is not None and "sha256" in outcomes[6].reason
    assert set(learner_row_counts(target_url, 6).values()) == {0}
    assert outcomes[3].status is outcomes[7].status is Status.RESTORED


def test_a_missing_file_and_a_wrong_size_are_refused(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    snapshot = make_snapshot(tmp_path / "snap", {i: sqlite_exports[i] for i in (3, 6, 7)})
    (snapshot / "learner-data-6-2024-01-15.json").unlink()
    with (snapshot / "learner-data-7-2024-01-15.json").open("ab") as handle:
        handle.write(b" ")

    outcomes = by_learner(restore(target_url, [snapshot]))

    assert [outcomes[i].status for i in (3, 6, 7)] == [
        Status.RESTORED,
        Status.REFUSED,
        Status.REFUSED,
    ]
    assert "missing" in str(outcomes[6].reason)
    assert "bytes" in str(outcomes[7].reason)


def test_a_manifest_that_cannot_be_trusted_refuses_the_whole_snapshot(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    snapshot = make_snapshot(tmp_path / "snap", {3: sqlite_exports[3]})
    manifest = snapshot / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"learner-data-3', b'"../learner-data-3'))

    report = restore(target_url, [snapshot])

    assert [o.status for o in report.outcomes] == [Status.REFUSED]
    assert "inside the snapshot" in str(report.outcomes[0].reason)
    assert user_ids(target_url) == []


def test_a_document_naming_another_learner_than_its_manifest_entry_is_refused(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    snapshot = make_snapshot(tmp_path / "snap", {3: sqlite_exports[6]})

    outcome = restore(target_url, [snapshot]).outcomes[0]

    assert outcome.status is Status.REFUSED
    assert "manifest lists learner 3 but the document holds learner 6" in str(outcome.reason)
    assert user_ids(target_url) == []


def test_a_document_failing_the_schema_is_refused_and_the_others_restored(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    documents = {
        3: edited(sqlite_exports[3], [(("learner", "password"), "hunter2")]),
        6: sqlite_exports[6],
    }
    outcomes = by_learner(restore(target_url, write_documents(tmp_path, documents)))

    refused = outcomes[3]
    assert refused.status is Status.REFUSED
    assert refused.subject == "learner 3" and "learner-data-3-" in refused.where
    assert "/learner" in str(refused.reason) and "password" in str(refused.reason)
    assert "hunter2" not in refused.line()
    assert set(learner_row_counts(target_url, 3).values()) == {0}
    assert outcomes[6].status is Status.RESTORED


def test_an_id_collision_under_fail_is_refused_and_leaves_the_target_unchanged(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    restore(target_url, write_documents(tmp_path / "first", {3: sqlite_exports[3]}))
    before = learner_row_counts(target_url, 3)
    other = edited(sqlite_exports[3], [(("learner", "name"), "Another Name")])
    paths = write_documents(tmp_path / "other", {3: other})

    outcome = restore(target_url, paths, on_conflict=OnConflict.FAIL).outcomes[0]

    assert outcome.status is Status.REFUSED
    assert "already in the target" in str(outcome.reason)
    assert learner_row_counts(target_url, 3) == before


def test_an_interrupted_restore_is_completed_by_running_it_again(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    """Each learner is one transaction, so an interrupted restore leaves whole learners; the
    same command again (on-conflict fail, the default) finds those identical to their documents
    and counts them skipped, restores the rest, and refuses nothing."""
    paths = write_documents(tmp_path, sqlite_exports)
    restore(target_url, paths[:2])  # interrupted after two learners

    report = restore(target_url, paths)

    assert report.summary() == f"{len(paths) - 2} restored, 2 skipped, 0 refused"
    skipped = [o for o in report.outcomes if o.status is Status.SKIPPED]
    assert {o.reason for o in skipped} == {"already restored, identical to the document"}
    assert export_all(target_url) == sqlite_exports


def test_skip_leaves_an_existing_learner_alone(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    paths = write_documents(tmp_path, {3: sqlite_exports[3]})
    restore(target_url, paths)

    report = restore(target_url, paths, on_conflict=OnConflict.SKIP)

    assert report.summary() == "0 restored, 1 skipped, 0 refused"
    assert export_all(target_url)[3] == sqlite_exports[3]


def test_replace_makes_the_target_hold_exactly_the_document(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    restore(target_url, write_documents(tmp_path / "old", {3: sqlite_exports[3]}))
    engine = sa.create_engine(target_url)
    with engine.begin() as conn:  # the account has a password by now, set by the platform
        conn.execute(sa.update(users).where(users.c.id == 3).values(password="$2b$10$kept"))
    engine.dispose()
    fewer = edited(
        sqlite_exports[3],
        [(("lessons",), []), (("achievements",), []), (("learner", "name"), "Renamed")],
    )

    outcome = restore(
        target_url, write_documents(tmp_path / "new", {3: fewer}), on_conflict=OnConflict.REPLACE
    ).outcomes[0]

    assert outcome.status is Status.RESTORED and outcome.replaced
    assert export_all(target_url)[3] == fewer
    engine = sa.create_engine(target_url)
    with engine.connect() as conn:
        password = conn.execute(sa.select(users.c.password).where(users.c.id == 3)).scalar()
    engine.dispose()
    assert password == "$2b$10$kept"


def test_replace_never_overwrites_another_users_rows(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    restore(target_url, write_documents(tmp_path / "a", {3: sqlite_exports[3]}))
    # Learner 6's document now claims a lesson id that is learner 3's in the target.
    lesson_id = orjson.loads(sqlite_exports[3])["lessons"][0]["id"]
    intruder = edited(sqlite_exports[6], [(("lessons", 0, "id"), lesson_id)])

    outcome = restore(
        target_url, write_documents(tmp_path / "b", {6: intruder}), on_conflict=OnConflict.REPLACE
    ).outcomes[0]

    assert outcome.status is Status.REFUSED
    assert "belong to another learner" in str(outcome.reason)
    assert set(learner_row_counts(target_url, 6).values()) == {0}
    assert export_all(target_url)[3] == sqlite_exports[3]


def test_replace_refuses_an_id_that_is_not_a_learner_in_the_target(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    # Learner 3's parent is user 1: restoring learner 3 creates that placeholder PARENT.
    restore(target_url, write_documents(tmp_path / "a", {3: sqlite_exports[3]}))
    impostor = orjson.loads(sqlite_exports[6])  # learner 6's data, claiming to be user 1
    impostor["learner"]["id"] = 1
    if impostor["profile"] is not None:
        impostor["profile"]["userId"] = "1"
    for lesson in impostor["lessons"]:
        lesson["learnerId"] = 1
    for achievement in impostor["achievements"]:
        achievement["learnerId"] = "1"

    outcome = restore(
        target_url,
        write_documents(tmp_path / "b", {1: orjson.dumps(impostor)}),
        on_conflict=OnConflict.REPLACE,
    ).outcomes[0]

    assert outcome.status is Status.REFUSED
    assert "PARENT account" in str(outcome.reason)


def test_a_username_held_by_another_user_is_refused(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    restore(target_url, write_documents(tmp_path / "a", {3: sqlite_exports[3]}))
    username = orjson.loads(sqlite_exports[3])["learner"]["username"]
    twin = edited(sqlite_exports[6], [(("learner", "username"), username)])

    outcome = restore(target_url, write_documents(tmp_path / "b", {6: twin})).outcomes[0]

    assert outcome.status is Status.REFUSED
    assert "username belongs to user 3" in str(outcome.reason)
    assert username not in outcome.line()


def test_a_missing_parent_is_created_as_a_placeholder_holding_only_its_id(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    outcome = restore(target_url, write_documents(tmp_path, {3: sqlite_exports[3]})).outcomes[0]

    assert outcome.placeholder_parent == 1
    assert any("placeholder PARENT" in note for note in outcome.notes)
    engine = sa.create_engine(target_url)
    with engine.connect() as conn:
        parent = conn.execute(sa.select(users).where(users.c.id == 1)).mappings().one()
    engine.dispose()
    assert dict(parent) == {
        "id": 1,
        "email": None,
        "username": None,
        "name": None,
        "role": "PARENT",
        "password": None,
        "parent_id": None,
        "created_at": None,
    }


def test_missing_parent_fail_refuses_the_learner_and_writes_nothing(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    paths = write_documents(tmp_path, {3: sqlite_exports[3], 18: sqlite_exports[18]})

    outcomes = by_learner(restore(target_url, paths, missing_parent=MissingParent.FAIL))

    assert outcomes[3].status is Status.REFUSED
    assert "parent 1 is not in the target" in str(outcomes[3].reason)
    assert outcomes[18].status is Status.RESTORED  # the demo's learner without a parent
    assert user_ids(target_url) == [18]


def test_a_wrong_key_is_refused_by_file(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path
) -> None:
    paths = write_documents(
        tmp_path, {3: sqlite_exports[3]}, suffix=".gz.enc", key=Fernet.generate_key()
    )

    outcome = restore(target_url, paths, key=Fernet.generate_key()).outcomes[0]

    assert outcome.status is Status.REFUSED
    assert "cannot be decrypted" in str(outcome.reason)
    assert user_ids(target_url) == []


def test_an_encrypted_file_without_a_key_is_refused(
    sqlite_exports: dict[int, bytes], target_url: str, tmp_path: Path, fernet_key: bytes
) -> None:
    paths = write_documents(tmp_path, {3: sqlite_exports[3]}, suffix=".enc", key=fernet_key)

    outcome = restore(target_url, paths, key=None).outcomes[0]

    assert outcome.status is Status.REFUSED
    assert "LEARNER_EXPORT_ENCRYPTION_KEY" in str(outcome.reason)


def test_restoring_into_an_existing_platform_database_replaces_in_place(
    sqlite_exports: dict[int, bytes], tmp_path: Path
) -> None:
    # The platform database has more tables and columns than the contract; they are kept.
    existing = make_sqlite_demo(tmp_path / "platform.sqlite3")
    paths = write_documents(tmp_path / "exports", sqlite_exports)

    skipped = restore(existing.url, paths, on_conflict=OnConflict.SKIP)
    replaced = restore(existing.url, paths, on_conflict=OnConflict.REPLACE)

    assert skipped.summary() == f"0 restored, {len(paths)} skipped, 0 refused"
    assert replaced.summary() == f"{len(paths)} restored, 0 skipped, 0 refused"
    assert not any(o.placeholder_parent for o in replaced.outcomes)  # the parents are there
    assert export_all(existing.url) == sqlite_exports
    engine = sa.create_engine(existing.url)
    with engine.connect() as conn:
        themes = conn.execute(sa.text("SELECT DISTINCT theme FROM users")).scalars().all()
        no_password = conn.execute(
            sa.select(sa.func.count()).where(users.c.password.is_(None))
        ).scalar_one()
    engine.dispose()
    assert themes == ["sunny"]
    assert no_password == 0


def test_a_pretty_printed_document_keeps_its_values_and_says_the_spelling_changes(
    sqlite_exports: dict[int, bytes], new_target: NewTarget, tmp_path: Path
) -> None:
    pretty = orjson.dumps(orjson.loads(sqlite_exports[3]), option=orjson.OPT_INDENT_2)
    target = new_target("sqlite")

    outcome = restore(target, write_documents(tmp_path, {3: pretty})).outcomes[0]

    assert outcome.status is Status.RESTORED
    assert any("not in the exporter's compact form" in note for note in outcome.notes)
    assert export_all(target)[3] == sqlite_exports[3]  # same values, compact again


def test_unreadable_values_exported_as_null_come_back_as_null_and_are_reported(
    sqlite_exports: dict[int, bytes], new_target: NewTarget, tmp_path: Path
) -> None:
    document = edited(sqlite_exports[3], [(("profile", "graph"), None)])
    target = new_target("sqlite")

    outcome = restore(target, write_documents(tmp_path, {3: document})).outcomes[0]

    assert outcome.status is Status.RESTORED
    assert [n for n in outcome.notes if "/profile/graph was null" in n]
    graph = orjson.loads(export_all(target)[3])["profile"]["graph"]
    assert graph == {"nodes": [], "edges": []}  # NULL exports as the contract's default
    assert not [n for n in outcome.notes if "compact form" in n]


def test_a_snapshot_is_restored_from_an_fsspec_url(
    sqlite_exports: dict[int, bytes], tmp_path: Path
) -> None:
    """The same reader on any fsspec file system: a snapshot copied to `memory://`."""
    local = make_snapshot(tmp_path / "snap", {i: sqlite_exports[i] for i in (3, 6)}, suffix=".zst")
    memory = fsspec.filesystem("memory")
    for path in local.iterdir():
        memory.pipe_file(f"/restore-test/snap/{path.name}", path.read_bytes())
    target = f"sqlite:///{tmp_path / 'target.sqlite3'}"
    try:
        report = restore(target, ["memory://restore-test/snap"])
    finally:
        memory.rm("/restore-test", recursive=True)

    assert report.summary() == "2 restored, 0 skipped, 0 refused"
    assert [o.where for o in report.outcomes] == [
        f"memory://restore-test/snap/learner-data-{i}-2024-01-15.json.zst" for i in (3, 6)
    ]
    again = export_all(target)
    assert {i: again[i] for i in (3, 6)} == {i: sqlite_exports[i] for i in (3, 6)}
