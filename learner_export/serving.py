"""The HTTP server's options and what is checked before it starts, shared by `python serve.py`
and `learner-export serve` (neither imports the other's module: `serve` runs the server,
`commands_serve` only registers the subcommand).

Options carry uvicorn's own names. The server refuses to start without JWT_SECRET, except with
`--demo`: then it serves the embedded demo database (built if missing) with a random secret made
for this process, and prints ready-to-use tokens and a curl command.

Nothing heavy is imported at module level, so `learner-export --help` stays fast.
"""

from __future__ import annotations

import argparse
import secrets
import sys

from learner_export.arguments import PROG, UserError, warn_of_missing_indexes
from learner_export.settings import Settings

DESCRIPTION = (
    "Serve GET /api/export?learnerId={id} (the platform's export endpoint) and /healthz, "
    "reading $DATABASE_URL (default: the embedded demo database). Tokens are checked with "
    "$JWT_SECRET; without one the server refuses to start unless --demo is given."
)
DEMO_TOKEN_HOURS = 12
DEMO_ADMIN_ID = 2
DEMO_PARENT_ID = 1
DEMO_CHILD_ID = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's options, named as uvicorn names them."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1); the per-user export limit is shared by all of them",
    )
    parser.add_argument("--ssl-keyfile", metavar="PATH", help="TLS private key: serve HTTPS")
    parser.add_argument("--ssl-certfile", metavar="PATH", help="TLS certificate chain: serve HTTPS")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="try it out: serve the embedded demo database with a random per-process secret and "
        "print tokens for the demo admin and a demo parent",
    )


def prepare(args: argparse.Namespace, settings: Settings) -> str:
    """Check the options and the configuration before serving; the token secret to serve with.

    Raises `UserError` when the server cannot start safely (no secret, bad options, unreadable
    source, an audit log that cannot be appended to). With `--demo`, builds the demo database if
    missing and prints tokens for it."""
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    if bool(args.ssl_keyfile) != bool(args.ssl_certfile):
        raise UserError("HTTPS needs both --ssl-keyfile and --ssl-certfile")
    if args.demo:
        secret = _prepare_demo(settings)
    elif settings.jwt_secret is None or not settings.jwt_secret.get_secret_value().strip():
        raise UserError(
            "JWT_SECRET is not set: set it to the platform's token secret "
            "(or pass --demo to try the server on the demo database)"
        )
    else:
        secret = settings.jwt_secret.get_secret_value()
    _check_places(settings)
    if args.demo:
        _print_demo_help(args, secret)
    return secret


def _check_places(settings: Settings) -> None:
    """The source can be opened and the audit log appended to, or a one-line error; a warning
    when the source lacks an index the exports need."""
    from extract.engine import create_source_engine
    from extract.errors import ExtractError
    from load.audit import ensure_audit_log
    from load.errors import LoadError

    try:
        create_source_engine(settings.source_url).dispose()
        ensure_audit_log(settings.audit_log_path)
    except (ExtractError, LoadError) as exc:
        raise UserError(str(exc)) from None
    warn_of_missing_indexes(settings.source_url)
    _warn_of_notice_gaps(settings)


def _warn_of_notice_gaps(settings: Settings) -> None:
    """The notice configuration can be read (or a one-line error); a warning naming what the
    Art. 15 notice will show as not configured by the operator."""
    from learner_export.notice_config import incomplete_warning, operator_notice

    if warning := incomplete_warning(operator_notice(settings), settings):
        print(f"{PROG}: warning: {warning}", file=sys.stderr, flush=True)


def _prepare_demo(settings: Settings) -> str:
    """Demo mode: only the embedded demo database (built if missing); returns a fresh secret."""
    if settings.database_url:
        raise UserError(
            "--demo serves only the embedded demo database; unset DATABASE_URL to use it"
        )
    if not settings.demo_database_path.exists():
        from learner_export.demo import build_demo_database

        build_demo_database(settings.source_url, learners=12, seed=7, replace=False)
        print(f"built the demo database at {settings.demo_database_path}", flush=True)
    return secrets.token_urlsafe(32)


def _print_demo_help(args: argparse.Namespace, secret: str) -> None:
    from learner_export.tokens import issue_token

    lifetime = DEMO_TOKEN_HOURS * 3600
    admin = issue_token(secret, DEMO_ADMIN_ID, "ADMIN", lifetime=lifetime)
    parent = issue_token(secret, DEMO_PARENT_ID, "PARENT", lifetime=lifetime)
    scheme = "https" if args.ssl_certfile else "http"
    host = "127.0.0.1" if args.host in {"0.0.0.0", "::"} else args.host  # noqa: S104
    host = f"[{host}]" if ":" in host else host
    insecure = " --insecure" if args.ssl_certfile else ""
    url = f"{scheme}://{host}:{args.port}/api/export?learnerId={DEMO_CHILD_ID}"
    print(
        f"DEMO MODE: demo database, random secret for this process; tokens valid "
        f"{DEMO_TOKEN_HOURS} hours.\n"
        f"Paste into another shell:\n\n"
        f"ADMIN_TOKEN={admin}    # user {DEMO_ADMIN_ID}, the demo admin\n"
        f"PARENT_TOKEN={parent}    # user {DEMO_PARENT_ID}, parent of learners 3 and 4\n"
        f'curl -fsS{insecure} -OJ -H "Authorization: Bearer $PARENT_TOKEN" "{url}"\n',
        flush=True,
    )
