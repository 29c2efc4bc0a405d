"""`flows.interrupt` in fresh interpreters (STOP is process-wide and never cleared, so setting it in
the test process would stop every later chunk)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHAIN = """
    import signal
    from flows.interrupt import STOP, stop_chunks_on_sigterm

    calls = []
    {install}
    stop_chunks_on_sigterm()
    stop_chunks_on_sigterm()  # a second call does not wrap twice
    try:
        signal.raise_signal(signal.SIGTERM)
    except KeyboardInterrupt:
        calls.append("KeyboardInterrupt")
    print(STOP.is_set(), calls)
"""


@pytest.mark.parametrize(
    ("install", "printed", "returncode"),
    [
        # Prefect's handler during a flow run: STOP is set before it runs, and it still runs.
        (
            "signal.signal(signal.SIGTERM, lambda *_: calls.append('prefect'))",
            "True ['prefect']",
            0,
        ),
        # The CLI's own handler: already sets STOP, kept as it is.
        (
            "from flows.interrupt import handle_stop_signals; handle_stop_signals()",
            "True ['KeyboardInterrupt']",
            0,
        ),
        ("signal.signal(signal.SIGTERM, signal.SIG_IGN)", "True []", 0),
        # No handler: the process still ends as SIGTERM ends it.
        ("", "", -15),
    ],
)
def test_sigterm_sets_stop_before_the_handler_it_found(
    install: str, printed: str, returncode: int
) -> None:
    code = textwrap.dedent(CHAIN).format(install=install)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == returncode, result.stderr.decode()[-2000:]
    assert result.stdout.decode().strip() == printed
