"""Where the seconds of a small archive go, and what Prefect costs on top of our own work.

    .venv/bin/python bench/prefect_cost.py [--learners 12] [--repeat 3]

Builds the demo database (SQLite, `--learners`, default 12: the quick start's demo) in a
temporary directory and measures, each as the median of `--repeat` runs, in this one run:

- interpreter: `python -c pass` (the floor of any command);
- imports: `python -c "import flows.archive"` (Prefect, SQLAlchemy, pyarrow, our code);
- server start: a local Prefect server from launch to its first healthy answer;
- our work: the same archive (documents, Parquet, manifest, audit) through the flow's recipe
  with plain steps, no Prefect (`flows.archive_steps.archive_run`), in this process;
- `learner-export archive`, cold: no PREFECT_API_URL, so the command starts its own server;
- `learner-export archive`, warm: PREFECT_API_URL pointing at a server already running.

Prints a table of seconds and each figure as a multiple of "our work" (the baseline measured in
the same run), so the figures compare on any machine. Loopback only; everything it makes is in
a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLI = Path(sys.executable).parent / "learner-export"
KEY = "bench-only-pseudonym-key"


def _median(repeat: int, measure: Callable[[int], float]) -> float:
    return statistics.median(measure(i) for i in range(repeat))


def _timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learners", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from flows.archive_steps import archive_run
    from flows.chunk import ChunkJob
    from flows.options import ArchiveOptions, run_parameters
    from flows.server import LocalServer
    from learner_export.demo import build_demo_database

    with tempfile.TemporaryDirectory(prefix="prefect-cost-") as tmp:
        base = Path(tmp)
        url = f"sqlite:///{base / 'demo.sqlite3'}"
        build_demo_database(url, learners=args.learners, seed=7, replace=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            DATABASE_URL=url,
            LEARNER_EXPORT_DATA_DIR=str(base / "data"),
            LEARNER_EXPORT_PSEUDONYM_KEY=KEY,
        )
        python = [sys.executable, "-c"]
        interpreter = _median(args.repeat, lambda _: _timed([*python, "pass"], env))
        imports = _median(args.repeat, lambda _: _timed([*python, "import flows.archive"], env))

        def server_start(i: int) -> float:
            started = time.perf_counter()
            # One home for all: its database is made (migrated) once, as under the data dir.
            server = LocalServer(base / "data" / "prefect-start")
            try:
                server.wait()
                return time.perf_counter() - started
            finally:
                server.stop()

        first_start = server_start(-1)
        start = _median(args.repeat, server_start)

        def plain(i: int) -> float:
            dest = base / f"plain-{i}"
            now = datetime.now(UTC)
            options = ArchiveOptions(dest=str(dest), run_id="r")
            job = ChunkJob(str(dest), "r", url, now, None, None, None, True, KEY)
            started = time.perf_counter()
            archive_run(
                job, run_parameters(options), now=now, tolerate_failures=False,
                audit_log=str(base / "audit.jsonl"), keep=None, log=logging.getLogger("bench"),
            )  # fmt: skip
            return time.perf_counter() - started

        plain(99)  # warm the caches the commands below also get warm
        work = _median(args.repeat, plain)

        def command(label: str, extra: dict[str, str]) -> Callable[[int], float]:
            def run(i: int) -> float:
                dest = base / f"{label}-{i}"
                return _timed([str(CLI), "archive", "--dest", str(dest)], {**env, **extra})

            return run

        cold = _median(args.repeat, command("cold", {}))
        server = LocalServer(base / "data" / "prefect-warm")
        try:
            api = server.wait()
            command("warm", {"PREFECT_API_URL": api})(99)  # the server's first run warms it
            warm = _median(args.repeat, command("warm", {"PREFECT_API_URL": api}))
        finally:
            server.stop()

    rows = [
        ("interpreter start (python -c pass)", interpreter),
        ("imports (flows.archive: Prefect, SQLAlchemy, pyarrow, ours)", imports),
        ("local Prefect server: first start (makes its database)", first_start),
        ("local Prefect server: launch to healthy", start),
        ("our work: the archive's recipe without Prefect", work),
        ("learner-export archive, cold (starts its own server)", cold),
        ("learner-export archive, warm (PREFECT_API_URL set)", warm),
    ]
    print(
        f"archive of the {args.learners}-learner demo (SQLite), median of {args.repeat} runs, "
        f"{os.cpu_count()} CPUs, one run of this script"
    )
    print(f"{'':62} {'seconds':>8} {'x our work':>11}")
    for label, seconds in rows:
        print(f"{label:62} {seconds:8.2f} {seconds / work:11.1f}")
    print(
        f"\nPrefect's share of a warm command: {warm - work:.2f} s "
        f"(imports {imports - interpreter:.2f} s of it); a cold command adds the server's start, "
        f"overlapped with the imports: {cold - warm:.2f} s more than warm."
    )


if __name__ == "__main__":
    main()
