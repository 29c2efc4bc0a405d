"""The pure parts of serve.py: the learnerId parameter and Accept-Encoding."""

from __future__ import annotations

import pytest

from serve import (
    LEARNER_ID_MALFORMED,
    LEARNER_ID_OUT_OF_RANGE,
    LEARNER_ID_REPEATED,
    LEARNER_ID_REQUIRED,
    accepts_gzip,
    learner_param,
)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["3"], 3),
        (["2147483647"], 2147483647),
        ([], LEARNER_ID_REQUIRED),
        ([""], LEARNER_ID_REQUIRED),
        (["3", "3"], LEARNER_ID_REPEATED),
        (["", ""], LEARNER_ID_REPEATED),
        (["2147483648"], LEARNER_ID_OUT_OF_RANGE),
        (["9" * 10_000], LEARNER_ID_OUT_OF_RANGE),
        (["03"], LEARNER_ID_MALFORMED),
        (["3\n"], LEARNER_ID_MALFORMED),
        (["３"], LEARNER_ID_MALFORMED),
        (["𝟑"], LEARNER_ID_MALFORMED),
        (["1_000"], LEARNER_ID_MALFORMED),
    ],
)
def test_learner_param(values: list[str], expected: int | str) -> None:
    parsed = learner_param(values)
    if isinstance(expected, int):
        assert (parsed.value, parsed.problem) == (expected, None)
    else:
        assert (parsed.value, parsed.problem) == (None, expected)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("br", False),
        ("gzip;q=0", False),
        ("gzip;q=0.0, identity", False),
        ("gzip;q=abc", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected
