"""The `serve` subcommand: `learner-export serve` runs the same server as `python serve.py`.

`register` imports nothing heavy; the server module (FastAPI, uvicorn) is imported when it runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from learner_export.arguments import add_command
from learner_export.serving import DESCRIPTION, add_arguments
from learner_export.settings import Settings


def register(subparsers: Any) -> None:
    """Add `serve` to the `learner-export` command line."""
    parser = add_command(
        subparsers, "serve", _run, help="serve the HTTP export endpoint", description=DESCRIPTION
    )
    add_arguments(parser)


def _run(args: argparse.Namespace, settings: Settings) -> None:
    from serve import serve_forever

    serve_forever(args, settings)
