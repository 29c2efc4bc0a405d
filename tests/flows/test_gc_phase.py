"""The archive's chunk phase tunes the garbage collector and always puts it back."""

from __future__ import annotations

import gc

import pytest

from flows.archive import _CHUNK_PHASE_GC_THRESHOLD, _collector_kept_out_of_the_chunks


def test_the_chunk_phase_freezes_and_raises_the_threshold_then_restores_both() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    with _collector_kept_out_of_the_chunks():
        assert gc.get_threshold() == (_CHUNK_PHASE_GC_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > frozen_before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_failing_chunk_phase_restores_the_collector_too() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), _collector_kept_out_of_the_chunks():
        raise RuntimeError("a chunk failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
