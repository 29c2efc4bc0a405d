"""The archive, verify and decrypt commands end to end, as a user runs them, on the suite's
Prefect server (its fixture lives with the flow tests)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from cryptography.fernet import Fernet

from learner_export.cli import main
from learner_export.commands_archive import unencrypted_tables_note
from learner_export.demo import DemoRows
from load.parquet import PARQUET_DIRECTORY
from tests.conftest import DemoSource, use_source
from transform.pseudonyms import pseudonym

# The commands run in this process against the session's Prefect server.
pytestmark = pytest.mark.usefixtures("prefect_environment", "prefect_server")


def test_archive_verify_and_decrypt(
    sqlite_demo: DemoSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = Fernet.generate_key().decode()
    use_source(
        sqlite_demo,
        monkeypatch,
        LEARNER_EXPORT_ENCRYPTION_KEY=key,
        LEARNER_EXPORT_PSEUDONYM_KEY="cli-test pseudonym key",
    )
    dest = tmp_path / "dest"
    args = ["archive", "--encrypt", "--compress", "gzip", "--run-id", "r1"]
    assert main([*args, "--learners", "3,4", "--dest", str(dest), "--exported-by", "2"]) == 0
    out, err = capsys.readouterr()
    assert "snapshot r1 complete: 2 documents" in out
    assert f"snapshot: {dest}/r1" in out
    # Said plainly, once: the analyst tables beside the encrypted documents are not encrypted.
    note = unencrypted_tables_note(encrypt=True, parquet=True)
    assert note is not None and err.count(note) == 1
    assert pq.read_table(dest / "r1" / PARQUET_DIRECTORY / "lessons").num_rows > 0
    assert unencrypted_tables_note(encrypt=True, parquet=False) is None
    assert unencrypted_tables_note(encrypt=False, parquet=True) is None

    assert main(["verify", str(dest / "r1")]) == 0
    assert "ok, 2 documents" in capsys.readouterr().out

    encrypted = dest / "r1" / next(p.name for p in (dest / "r1").glob("learner-data-3-*"))
    assert main(["decrypt", str(encrypted), "--out", str(tmp_path / "plain")]) == 0
    plain = Path(capsys.readouterr().out.strip())
    assert plain.name == encrypted.name.removesuffix(".gz.enc")
    document = orjson.loads(plain.read_bytes())
    assert (document["learner"]["id"], document["exportedBy"]) == (3, 2)

    original = encrypted.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01  # one bit of the token flipped: always a change
    encrypted.write_bytes(tampered)
    assert encrypted.read_bytes() != original
    assert main(["verify", str(dest / "r1")]) == 1
    err = capsys.readouterr().err
    assert "sha256 differs" in err and encrypted.name in err


# --- the pseudonyms of the Parquet tables, as a deployment configures their key ----------------

KEY_A = "deployment A's pseudonym key (tests only)"
KEY_B = "deployment B's pseudonym key (tests only)"
PSEUDONYM_LEARNERS = (3, 6, 7)  # each has lessons, quiz questions and achievements in the demo


def _documented_pseudonym(learner_id: int, key: str) -> str:
    """README "Pseudonyms, not people", computed here without the code under test: HMAC-SHA256
    keyed with the configured key, over the id in decimal digits, lowercase hex, 32 characters."""
    digest = hmac.new(key.encode(), str(learner_id).encode("ascii"), hashlib.sha256)
    return digest.hexdigest()[:32]


def _archive_parquet(
    source: DemoSource, monkeypatch: pytest.MonkeyPatch, dest: Path, run_id: str, key: str
) -> Path:
    """`learner-export archive` with Parquet on (the default) and `key` in the environment."""
    use_source(source, monkeypatch, LEARNER_EXPORT_PSEUDONYM_KEY=key)
    learners = ",".join(str(i) for i in PSEUDONYM_LEARNERS)
    command = ["archive", "--learners", learners, "--chunk-size", "2", "--run-id", run_id]
    assert main([*command, "--dest", str(dest)]) == 0
    return dest / run_id / PARQUET_DIRECTORY


def _pseudonym_rows(parquet: Path) -> dict[str, list[tuple[str, str]]]:
    """Each table's (row's owner key, learner_pseudonym) pairs, sorted: the lesson id for lessons
    and quiz questions, the achievement id for achievements, nothing for learners."""
    owners = {"learners": None, "lessons": "lesson_id", "quiz_questions": "lesson_id",
              "achievements": "achievement_id"}  # fmt: skip
    rows = {}
    for table, owner in owners.items():
        read = pq.read_table(parquet / table).to_pydict()
        keys = read[owner] if owner else [""] * len(read["learner_pseudonym"])
        rows[table] = sorted(zip(keys, read["learner_pseudonym"], strict=True))
    return rows


def _expected_rows(
    demo: DemoRows, parquet_rows: dict[str, list[tuple[str, str]]], key: str
) -> dict[str, list[tuple[str, str]]]:
    """What the tables must hold under `key`, by the demo rows' owners and the documented hash."""
    lesson_owner = {r["id"]: r["learner_id"] for r in demo.lessons}
    achievement_owner = {r["id"]: int(r["learner_id"]) for r in demo.achievements}
    return {
        "learners": sorted(("", _documented_pseudonym(i, key)) for i in PSEUDONYM_LEARNERS),
        "lessons": sorted(
            (r["id"], _documented_pseudonym(r["learner_id"], key))
            for r in demo.lessons
            if r["learner_id"] in PSEUDONYM_LEARNERS
        ),
        "quiz_questions": [
            (lesson, _documented_pseudonym(lesson_owner[lesson], key))
            for lesson, _ in parquet_rows["quiz_questions"]
        ],
        "achievements": sorted(
            (r["id"], _documented_pseudonym(achievement_owner[r["id"]], key))
            for r in demo.achievements
            if achievement_owner[r["id"]] in PSEUDONYM_LEARNERS
        ),
    }


def test_the_archive_keys_pseudonyms_with_the_configured_key(
    sqlite_demo: DemoSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two deployments' keys, one run each, and the first key once more: every pseudonym column
    is the documented keyed hash of its row's learner under the key of its run, so the columns
    differ between keys and are the same for one key in every run."""
    dest = tmp_path / "dest"
    runs = {
        run_id: _pseudonym_rows(_archive_parquet(sqlite_demo, monkeypatch, dest, run_id, key))
        for run_id, key in (("a1", KEY_A), ("b1", KEY_B), ("a2", KEY_A))
    }
    capsys.readouterr()
    assert all(runs["a1"][table] for table in runs["a1"])  # every table has rows to compare
    for run_id, key in (("a1", KEY_A), ("b1", KEY_B), ("a2", KEY_A)):
        assert runs[run_id] == _expected_rows(sqlite_demo.rows, runs[run_id], key), run_id
    assert runs["a2"] == runs["a1"]  # stable for one key
    pseudonyms_a = {p for rows in runs["a1"].values() for _, p in rows}
    pseudonyms_b = {p for rows in runs["b1"].values() for _, p in rows}
    assert len(pseudonyms_a) == len(PSEUDONYM_LEARNERS) and pseudonyms_a.isdisjoint(pseudonyms_b)
    # The product's own function agrees with the documented definition (support uses it).
    for learner_id in PSEUDONYM_LEARNERS:
        for key in (KEY_A, KEY_B):
            assert pseudonym(learner_id, key.encode()) == _documented_pseudonym(learner_id, key)
