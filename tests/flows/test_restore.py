"""The `restore_learners` flow, run by Prefect: a whole snapshot into a new database."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from flows.restore import RestoreIncomplete, restore_learners
from tests.conftest import NewTarget
from tests.restore_helpers import export_all, learner_row_counts, make_snapshot

pytestmark = pytest.mark.usefixtures("prefect_backend")


def test_restore_learners_restores_an_encrypted_snapshot(
    sqlite_exports: dict[int, bytes], new_target: NewTarget, fernet_key: bytes, tmp_path: Path
) -> None:
    snapshot = make_snapshot(tmp_path / "snap", sqlite_exports, suffix=".zst.enc", key=fernet_key)
    target = new_target("sqlite")

    state = restore_learners(snapshot, SecretStr(target), return_state=True)

    assert state.is_completed()
    assert state.result() == {"restored": len(sqlite_exports), "skipped": 0, "refused": 0}
    assert export_all(target) == sqlite_exports
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert "database_url" in run.parameters
    assert target not in str(run.parameters), "the target URL must be recorded masked"


def test_restore_learners_fails_after_restoring_the_verified_learners(
    sqlite_exports: dict[int, bytes], new_target: NewTarget, tmp_path: Path
) -> None:
    documents = {i: sqlite_exports[i] for i in (3, 6)}
    snapshot = make_snapshot(tmp_path / "snap", documents)
    (snapshot / "learner-data-6-2024-01-15.json").write_bytes(b"{}" + b" " * 10)
    target = new_target("sqlite")

    with pytest.raises(RestoreIncomplete, match="1 restored, 0 skipped, 1 refused"):
        restore_learners(snapshot, target)

    assert learner_row_counts(target, 3)["users"] == 1
    assert set(learner_row_counts(target, 6).values()) == {0}
