"""`learner-export serve` (and `python serve.py`): run the HTTP export with uvicorn.

Options carry uvicorn's own names. The server refuses to start without JWT_SECRET, except with
`--demo`: then it serves the embedded demo database (built if missing) with a random secret made
for this process, and prints ready-to-use tokens and a curl command.

Nothing heavy is imported until the command runs, so `learner-export --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import secrets
from typing import Any

from learner_export.cli import UserError
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
        help="worker processes (default 1); the per-user export limit applies per worker",
    )
    parser.add_argument("--ssl-keyfile", metavar="PATH", help="TLS private key: serve HTTPS")
    parser.add_argument("--ssl-certfile", metavar="PATH", help="TLS certificate chain: serve HTTPS")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="try it out: serve the embedded demo database with a random per-process secret and "
        "print tokens for the demo admin and a demo parent",
    )


def register(subparsers: Any) -> None:
    """Add `serve` to the `learner-export` command line."""
    parser = subparsers.add_parser(
        "serve", help="serve the HTTP export endpoint", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> None:
    """Check the configuration, then serve until interrupted. Raises `UserError` when the
    server cannot start safely (no secret, bad options, unreadable source)."""
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
    _run_uvicorn(args, settings, secret)


def _check_places(settings: Settings) -> None:
    """The source can be opened and the audit log appended to, or a one-line error."""
    from extract.engine import create_source_engine
    from extract.errors import ExtractError
    from load.audit import ensure_audit_log
    from load.errors import LoadError

    try:
        create_source_engine(settings.source_url).dispose()
        ensure_audit_log(settings.audit_log_path)
    except (ExtractError, LoadError) as exc:
        raise UserError(str(exc)) from None


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


def _run_uvicorn(args: argparse.Namespace, settings: Settings, secret: str) -> None:
    import uvicorn

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "ssl_keyfile": args.ssl_keyfile,
        "ssl_certfile": args.ssl_certfile,
        # The access log would write request URLs (learner ids) and client addresses to stderr;
        # the audit log is the record of exports.
        "access_log": False,
        "server_header": False,
        "ws": "none",
    }
    if args.workers == 1:
        from serve import create_app

        uvicorn.run(create_app(settings, secret=secret), **options)
        return
    if args.demo:
        # Worker processes build their settings from the environment: hand them the demo secret.
        os.environ["JWT_SECRET"] = secret
    _run_workers("serve:create_app_from_environment", workers=args.workers, options=options)


def _run_workers(factory: str, *, workers: int, options: dict[str, Any]) -> None:
    """What `uvicorn.run` does for several workers, but with TCP_NODELAY on the shared socket.

    uvicorn binds that socket without naming the TCP protocol, so asyncio does not turn Nagle's
    algorithm off on the connections it accepts (it does when uvicorn binds in-process, with one
    worker). Every response is two writes (headers, then body), so the body's last segment would
    wait for the client's delayed ACK: ~40 ms on a one-client request. Linux copies TCP_NODELAY
    from a listening socket to the connections it accepts.
    """
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(factory, factory=True, workers=workers, **options)
    sock = config.bind_socket()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()
