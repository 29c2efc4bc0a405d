"""Children's data stays in the snapshot: canary values planted in the source never reach
Prefect's database, result storage or logs (nor do the source's password and the pseudonym key).

The run writes the Parquet tables too, so the pseudonym key travels through Prefect with the
flow's secrets and the chunk tasks, and the planted values pass through the analyst tables."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from flows.server import drain_prefect_queues
from tests.conftest import DemoSource, PrefectServer, make_postgres_demo, make_sqlite_demo
from tests.flows.conftest import run_archive
from tests.pg import READER_PASSWORD
from transform.pseudonyms import pseudonym

CANARY_NAME = "Qzvxcanary Learnername"
CANARY_SPEC = "CANARY-SPEC-7731-lesson-text"
CANARY_PAYLOAD = "CANARY-ACHIEVEMENT-5521"
CANARY_PSEUDONYM_KEY = "CANARY-PSEUDONYM-KEY-9043-of-this-deployment"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def canary_source(request: pytest.FixtureRequest, tmp_path: Path) -> DemoSource:
    if request.param == "sqlite":
        source = make_sqlite_demo(tmp_path / "canary.sqlite3", learners=6)
    else:
        source = make_postgres_demo(request.getfixturevalue("pg_cluster"), "canary", learners=6)
    json = "CAST(:value AS json)" if source.kind == "postgresql" else ":value"
    engine = sa.create_engine(source.owner_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE users SET name = :n WHERE id = 3"), {"n": CANARY_NAME})
            conn.execute(
                sa.text(f"UPDATE lessons SET spec = {json} WHERE learner_id = 3"),
                {"value": f'{{"title": "{CANARY_SPEC}"}}'},
            )
            conn.execute(
                sa.text(f"UPDATE achievements SET payload = {json} WHERE learner_id = '3'"),
                {"value": f'{{"title": "{CANARY_PAYLOAD}"}}'},
            )
    finally:
        engine.dispose()
    return source


def _haystacks(*roots: Path) -> list[tuple[Path, bytes]]:
    return [
        (p, p.read_bytes())
        for root in roots
        if root.exists()
        for p in root.rglob("*")
        if p.is_file()
    ]


def test_no_learner_content_reaches_prefect(
    canary_source: DemoSource,
    tmp_path: Path,
    prefect_server: PrefectServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = run_archive(
        canary_source,
        tmp_path / "dest",
        run_id="canary",
        learners=[3, 4, 1],
        tolerate_failures=True,
        parquet=True,
        secrets={"pseudonym_key": CANARY_PSEUDONYM_KEY},
    )
    drain_prefect_queues()
    snapshot = tmp_path / "dest" / "canary"
    document = next(snapshot.glob("learner-data-3-*"))
    planted = (CANARY_NAME, CANARY_SPEC, CANARY_PAYLOAD)
    assert all(c.encode() in document.read_bytes() for c in planted)  # the plant took
    # ... in the analyst tables too, under learner 3's pseudonym with the configured key.
    who = pseudonym(3, CANARY_PSEUDONYM_KEY.encode())
    lessons = pq.read_table(snapshot / "parquet" / "lessons").to_pylist()
    achievements = pq.read_table(snapshot / "parquet" / "achievements").to_pylist()
    assert {r["spec_title"] for r in lessons if r["learner_pseudonym"] == who} == {CANARY_SPEC}
    assert {r["title"] for r in achievements if r["learner_pseudonym"] == who} == {CANARY_PAYLOAD}
    assert result.not_found == [1]
    secrets = [*planted, CANARY_PSEUDONYM_KEY]
    if canary_source.kind == "postgresql":
        secrets.append(READER_PASSWORD)
    files = _haystacks(prefect_server.home, prefect_server.storage)
    assert any(p.name.startswith("prefect.db") for p, _ in files)
    output = caplog.text + "".join(capsys.readouterr())
    for secret in secrets:
        assert secret not in output
        leaks = [str(p) for p, data in files if secret.encode() in data]
        assert leaks == [], f"{secret!r} found in {leaks}"
    assert canary_source.url not in output
